#!/usr/bin/env bash
# Installs the system packages fewstep's builds, tests and examples use.
# Idempotent; runs as root (CI, fresh machines) or via sudo.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

need=()
# Fashion-MNIST (idx files under /usr/share/datasets/fashion-mnist/) for the
# trainer's real-data tests and examples.
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
