#!/usr/bin/env bash
# From a fresh checkout to a PNG grid of generated images:
#   bash scripts/setup.sh && bash scripts/quickstart.sh
#
# Uses the shipped model under examples/models/ when there is one. Until a
# trained model ships, it trains a small diffusion teacher on Fashion-MNIST
# for FEWSTEP_QUICKSTART_STEPS steps of batch 16 (default 60: a few minutes
# on 2 CPU cores; at that budget expect noisy silhouettes, not clothes),
# exports it to ONNX, and samples it with the runtime. A re-run starts the training run afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-samples.png}"
steps="${FEWSTEP_QUICKSTART_STEPS:-60}"

cargo build --release -p fewstep -p fewstep-trainer
bin="${CARGO_TARGET_DIR:-target}/release"

model=$(ls examples/models/*.onnx 2>/dev/null | head -n 1 || true)
gen_args=()
if [ -z "$model" ]; then
  run=runs/quickstart
  rm -rf "$run"
  "$bin/fewstep-train" diffusion --data /usr/share/datasets/fashion-mnist \
    --out "$run" --preset small --steps "$steps" --batch 16 --warmup 20 \
    --sample-every "$steps" --sample-count 16 --sample-steps 16
  "$bin/fewstep-train" export --ckpt "$run" --out "$run/model.onnx"
  model="$run/model.onnx"
  gen_args=(--steps 32)
fi
"$bin/fewstep" info "$model"
"$bin/fewstep" generate --model "$model" --batch 16 --seed 0 "${gen_args[@]}" --out "$out"
echo "wrote $out from $model"
