#!/usr/bin/env bash
# One prepared command for a short GPU window (issue 20 §2): trains the
# `medium` preset on CUDA for a fixed number of steps, prints examples/s
# beside the PyTorch twin (bench/trainer_vs_torch.py) on the same GPU,
# exports the run, and leaves the ONNX file, the loss curve, the sample grid
# and the log under $OUT (default: gpu-check-out/).
#
# The GPU machine may have no Rust toolchain and no internet: build the
# trainer here and carry the binary (and the data, if that machine lacks
# /usr/share/datasets/fashion-mnist):
#
#   cargo build --release -p fewstep-trainer --features cuda
#   strip -o gpu-bin/fewstep-train target/release/fewstep-train
#   # on the GPU machine, from the repository root:
#   TRAIN=gpu-bin/fewstep-train STEPS=300 bash scripts/gpu-check.sh
#
# Knobs (environment): TRAIN (binary), DATA (idx folder), PRESET (medium),
# BATCH (128), STEPS (300 optimiser steps), TORCH_STEPS (20 timed steps of
# the twin), PYTHON (a python with torch, default python3), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

train=${TRAIN:-target/release/fewstep-train}
data=${DATA:-/usr/share/datasets/fashion-mnist}
preset=${PRESET:-medium}
batch=${BATCH:-128}
steps=${STEPS:-300}
torch_steps=${TORCH_STEPS:-20}
python=${PYTHON:-python3}
out=${OUT:-gpu-check-out}
mkdir -p "$out"
log="$out/gpu-check.log"
: > "$log"
say() { echo "$@" | tee -a "$log"; }

say "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log" || true
"$train" --version 2>&1 | tee -a "$log" || { say "no trainer binary at $train"; exit 1; }
[ -e "$data" ] || { say "no dataset at $data (set DATA)"; exit 1; }

say "== PyTorch twin on the GPU ($preset, batch $batch)"
"$python" bench/trainer_vs_torch.py --preset "$preset" --batch "$batch" --device cuda \
    --warmup 3 --steps "$torch_steps" 2>&1 | tee -a "$log" || say "PyTorch twin failed"

say "== fewstep-train bench on CUDA ($preset, batch $batch)"
"$train" bench --data "$data" --preset "$preset" --batch "$batch" --warmup 3 \
    --steps "$torch_steps" --backend cuda 2>&1 | tail -1 | tee -a "$log" || say "bench failed"

say "== training $steps steps on CUDA"
start=$(date +%s)
"$train" diffusion --data "$data" --out "$out/run" --preset "$preset" --class-cond \
    --batch "$batch" --steps "$steps" --warmup 50 --lr 3e-4 --sample-every "$steps" \
    --sample-steps 32 --sample-count 100 --backend cuda --quiet 2>&1 | tee -a "$log"
end=$(date +%s)
say "trained $steps steps of batch $batch in $((end - start)) s: $(( steps * batch / (end - start > 0 ? end - start : 1) )) examples/s end to end (with checkpoints and the sample grid)"

say "== export"
"$train" export --ckpt "$out/run" --out "$out/fmnist-$preset-gpu.onnx" --f16 2>&1 | tee -a "$log"
cp "$out/run/loss.png" "$out/loss.png" 2>/dev/null || true
cp "$(ls -1 "$out"/run/samples/*.png 2>/dev/null | tail -1)" "$out/samples.png" 2>/dev/null || true
# The checkpoint itself is large; keep what a later session needs to resume.
du -sh "$out"/* | tee -a "$log"
say "done: $out"
