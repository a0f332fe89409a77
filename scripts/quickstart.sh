#!/usr/bin/env bash
# From a fresh checkout to a PNG grid of generated images:
#   bash scripts/setup.sh && bash scripts/quickstart.sh
#
# Samples the shipped 4-step Fashion-MNIST model (examples/models/, see its
# README): 100 images, one class per grid column, 4 network evaluations
# each. Only the runtime is built (a few minutes the first time). With
# FEWSTEP_QUICKSTART_TRAIN=1 (or no shipped model) it instead trains a small
# diffusion teacher for FEWSTEP_QUICKSTART_STEPS steps of batch 16 (default
# 60: a few minutes on 2 CPU cores; expect noisy silhouettes at that budget),
# exports it and samples it. A re-run starts that training run afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-samples.png}"
steps="${FEWSTEP_QUICKSTART_STEPS:-60}"

bin="${CARGO_TARGET_DIR:-target}/release"
model=examples/models/fmnist-cd4.onnx
if [ "${FEWSTEP_QUICKSTART_TRAIN:-0}" = 1 ] || [ ! -f "$model" ]; then
  model=""
fi
gen_args=(--batch 100 --label 0,1,2,3,4,5,6,7,8,9)
if [ -n "$model" ]; then
  cargo build --release -p fewstep
else
  cargo build --release -p fewstep -p fewstep-trainer
  run=runs/quickstart
  rm -rf "$run"
  "$bin/fewstep-train" diffusion --data /usr/share/datasets/fashion-mnist \
    --out "$run" --preset small --steps "$steps" --batch 16 --warmup 20 \
    --sample-every "$steps" --sample-count 16 --sample-steps 16
  "$bin/fewstep-train" export --ckpt "$run" --out "$run/model.onnx"
  model="$run/model.onnx"
  gen_args=(--batch 16 --steps 32)
fi
"$bin/fewstep" info "$model"
"$bin/fewstep" generate --model "$model" --seed 0 "${gen_args[@]}" --out "$out"
echo "wrote $out from $model"
