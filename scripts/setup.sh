#!/usr/bin/env bash
# Installs what fewstep's builds, tests and examples need on a fresh Debian
# machine. Idempotent; runs as root (CI, fresh machines) or via sudo.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# `apt-get update` fails when one index of one architecture is mid-sync on
# the mirror (seen here: "File has unexpected size"), although the packages
# needed are usually reachable: go on with the indexes it has, and retry the
# install once after a second update.
apt_update() { $SUDO apt-get update -qq || echo "setup: apt-get update reported errors; going on"; }
apt_install() {
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" ||
    { sleep 20; apt_update; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"; }
}

need=()
# Fashion-MNIST (idx files under /usr/share/datasets/fashion-mnist/): the
# trainer's real data.
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
# C toolchain for the C API tests and examples.
command -v cc >/dev/null || need+=(gcc)
command -v c++ >/dev/null || need+=(g++)
# Memory checking of the C API tests.
command -v valgrind >/dev/null || need+=(valgrind)
command -v python3 >/dev/null || need+=(python3 python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  apt_update
  apt_install "${need[@]}"
fi

# onnx (checker) and onnxruntime: cross-checks of exported models and the
# runtime benchmark's reference. Tests skip with a note when absent.
if ! python3 -c "import onnx, onnxruntime, numpy" >/dev/null 2>&1; then
  python3 -m pip install -q onnx onnxruntime numpy ||
    python3 -m pip install -q --break-system-packages onnx onnxruntime numpy
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# ARM64 (the phones' processor), built and tested under emulation
# (scripts/arm64.sh): rustup cannot fetch another target's standard library
# here, so Debian's rustc-web 1.96 with its arm64 std
# (libstd-rust-web-dev:arm64), the cross linker, and qemu-user.
if [ "${FEWSTEP_SKIP_ARM64:-0}" != 1 ] && ! { [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] &&
  command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null; }; then
  $SUDO dpkg --add-architecture arm64
  apt_update
  apt_install rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu qemu-user-static
fi
