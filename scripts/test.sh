#!/usr/bin/env bash
# The project's test command (README): every crate's tests, docs and benches compiled.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
cargo test --workspace --doc
