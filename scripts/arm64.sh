#!/usr/bin/env bash
# Builds fewstep for aarch64-unknown-linux-gnu and runs its tests under
# qemu-user (installed by scripts/setup.sh). Run from anywhere:
#
#   bash scripts/arm64.sh            # fewstep-core: every unit and integration test
#
# Toolchain: Debian's rustc-web / cargo-web (1.96) with libstd-rust-web-dev:arm64
# (rustup cannot fetch the arm64 standard library here), linked by
# aarch64-linux-gnu-gcc, run by qemu-aarch64-static.
#
# The runner is qemu WITHOUT `-L /usr/aarch64-linux-gnu`. With -L, qemu takes
# the dynamic loader from the cross sysroot (libc6-arm64-cross 2.36-8cross1)
# but, as that sysroot has no /lib/aarch64-linux-gnu, falls back to the host
# path for libc.so.6, i.e. the multiarch libc6:arm64 (2.36-9+deb12u14, pulled
# in by libstd-rust-web-dev:arm64). The mixed glibc spins in pthread_create's
# locking before clone: every program that starts a thread (C or Rust, qemu
# 7.2 and 10.0 alike) hangs. Without -L, loader and libc both come from
# libc6:arm64 and threads work.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in /usr/bin/rustc /usr/bin/cargo aarch64-linux-gnu-gcc qemu-aarch64-static; do
  command -v "$tool" >/dev/null || { echo "arm64: $tool missing (bash scripts/setup.sh installs it)"; exit 1; }
done
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
# Its own target dir: another rustc, so nothing is shared with target/.
target_dir=target/aarch64-web
echo "arm64: $(/usr/bin/rustc --version), $(qemu-aarch64-static --version | head -n 1)"
/usr/bin/cargo test --offline --locked -p fewstep-core --target aarch64-unknown-linux-gnu \
  --target-dir "$target_dir" --lib --tests
