#!/usr/bin/env bash
# The runtime's benchmark suite against onnxruntime (issue 16 §2): one
# command that builds, generates what is missing, and prints the tables of
# docs/PERFORMANCE.md ("Suite").
#   bash bench/suite.sh [--runs 3] [--only LABEL]
# onnxruntime (and numpy, onnx) go into a virtual environment of their own,
# $FEWSTEP_BENCH_VENV (default target/bench-venv), installed on first use.
# The 64×64 and 32×32 PyTorch suite models need PyTorch: point
# $FEWSTEP_TORCH_PYTHON at a python with torch, onnx and onnxscript
# (bench/torch_export/README.md); without it those rows are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FEWSTEP_BENCH_VENV:-target/bench-venv}
if ! "$venv/bin/python" -c "import onnxruntime, numpy, onnx" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onnxruntime numpy onnx
fi
if [ ! -f bench/models/unet_gn21.onnx ] && [ -f ../shared/bench/gen_unet.py ]; then
  "$venv/bin/python" ../shared/bench/gen_unet.py bench/models
fi
if [ -n "${FEWSTEP_TORCH_PYTHON:-}" ] && [ ! -f bench/suite_models/unet64_phone.onnx ]; then
  "$FEWSTEP_TORCH_PYTHON" bench/torch_export/export_unet.py --suite bench/suite_models
fi
cargo build --release -q -p fewstep -p fewstep-ffi --bin fewstep --example startup
exec "$venv/bin/python" bench/suite.py "$@"
