#!/usr/bin/env bash
# Builds fewstep for aarch64-unknown-linux-gnu (release) and runs its tests
# under qemu-user (installed by scripts/setup.sh). Run from anywhere:
#
#   bash scripts/arm64.sh
#
# What runs on ARM64 (emulated):
#   1. fewstep-core: every unit and integration test;
#   2. the runtime: its unit tests (the Winograd kernels against the scalar
#      reference, fused GroupNorm, graph rewrites), the sampler, determinism,
#      Winograd, GroupNorm and load-error tests, and `platforms`, which
#      compares noise (bit for bit) and images (to a tolerance) with values
#      made on x86-64 and prints the difference table;
#   3. a check that the Winograd transforms compiled to NEON vector code;
#   4. the C library: `ffi/tests/c_api.rs` runs natively but compiles every
#      C program (the example, errors, pixels, editing, loading, concurrency
#      and the README's Android snippet) with aarch64-linux-gnu-gcc against
#      the ARM64 libfewstep.a and libfewstep.so and runs them under qemu
#      (no valgrind: it cannot run ARM64 code here).
# Emulated timings mean nothing; nothing here measures speed.
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
target=aarch64-unknown-linux-gnu
cargo_arm() { /usr/bin/cargo "$1" --offline --locked --release --target "$target" --target-dir "$target_dir" "${@:2}"; }

echo "arm64: fewstep-core"
cargo_arm test -p fewstep-core --lib --tests

# The runtime and the C library in one package selection, so that every
# cargo call below resolves the same features and builds tract once. Only
# the test targets that run here are built: every other test binary and
# example links all of tract again (minutes on two cores, gigabytes on disk).
arm_pkgs=(-p fewstep -p fewstep-ffi)
# `--test header` is built, not run: an integration test of fewstep-ffi makes
# cargo build its library with every crate type, libfewstep.a and .so (a
# plain `cargo build` resolves other features and builds tract a second time).
arm_tests=(--lib --test sampling --test winograd --test group_norm --test errors --test platforms --test header)
echo "arm64: build the runtime, the C library (libfewstep.a, .so) and the tests that run here"
cargo_arm test "${arm_pkgs[@]}" "${arm_tests[@]}" --no-run

# The platforms test runs one thread for ~6 minutes (emulated), so it goes
# in the background, straight from its executable (a second cargo would wait
# for this target dir's lock), while the other tests use the other core.
newest() { ls -t "$target_dir/$target"/release/deps/"$1"-* | grep -v '\.d$' | head -n 1; }
platforms_log=$(mktemp)
qemu-aarch64-static "$(newest platforms)" --nocapture --test-threads 1 >"$platforms_log" 2>&1 &
platforms_pid=$!
trap 'kill "$platforms_pid" 2>/dev/null || true; rm -f "$platforms_log"' EXIT

echo "arm64: runtime (unit, sampling, determinism, Winograd, GroupNorm, loading errors)"
# Skipped: the C library's panic-hook test re-runs its own executable as a
# child process, which qemu-user cannot start from inside the emulation
# (no binfmt_misc here).
cargo_arm test "${arm_pkgs[@]}" --lib --test sampling --test winograd --test group_norm --test errors \
  -- --skip panics_inside_calls_are_reported_not_printed

echo "arm64: NEON in fewstep's Winograd code"
bin=$(newest winograd)
neon=$(aarch64-linux-gnu-objdump -d --no-show-raw-insn -C "$bin" |
  awk '/^[0-9a-f]+ <.*fewstep::graph::winograd::/ { f = 1; next } /^[0-9a-f]+ </ { f = 0 } f' |
  grep -cE '\bf(add|sub|mul|mla|mls|fma|fms)\s+v[0-9]+\.4s' || true)
echo "arm64: $neon NEON 4-lane float instructions in fewstep::graph::winograd"
[ "$neon" -gt 0 ] || { echo "arm64: the Winograd code was not vectorised"; exit 1; }

echo "arm64: the C library (C programs built for ARM64, run under qemu)"
# The build above left libfewstep.a / .so for ARM64 in deps/. The
# harness runs natively, with this machine's toolchain and the workspace's
# features (as scripts/test.sh built it: nothing is rebuilt).
env -u RUSTC -u RUSTDOC \
  FEWSTEP_C_CC=aarch64-linux-gnu-gcc \
  FEWSTEP_C_LIB_DIR="$PWD/$target_dir/$target/release/deps" \
  FEWSTEP_C_RUNNER=qemu-aarch64-static \
  cargo test --offline --workspace --test c_api

echo "arm64: x86-64 vs ARM64 (runtime/tests/platforms.rs)"
if ! wait "$platforms_pid"; then
  cat "$platforms_log"
  exit 1
fi
grep -E '^\||^test result' "$platforms_log"
