#!/usr/bin/env bash
# Scores every model that bench/quality/train.sh exported and regenerates
# docs/RESULTS.md's tables and plots: the documented command of issue 7.
#
#   TRAIN=target/release/fewstep-train RUNS=runs/quality bash bench/quality/eval.sh
#
# Each row samples N images through the runtime (`fewstep-train eval`), scores
# them with the Fashion-MNIST (or emoji) classifier's features against the test
# split, and appends one JSON line to docs/results/results.jsonl; rows already there
# are skipped, so an interrupted run continues where it stopped. JOBS rows run
# at once, each with THREADS runtime threads (time per sample is measured per
# row, so compare it only between rows run the same way).
set -euo pipefail

TRAIN=${TRAIN:-target/release/fewstep-train}
RUNS=${RUNS:-runs/quality}
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
EMOJI=${EMOJI:-data/emoji}
N=${N:-500}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
DOC=${DOC:-docs}
GRIDS=${GRIDS:-$DOC/results}
ONLY=${ONLY:-}
MAX_STEPS=${MAX_STEPS:-100000}
# The raw rows live beside the grids, in the repository: a later session
# continues the table where this one stopped.
RESULTS=${RESULTS:-$GRIDS/results.jsonl}
ONNX="$RUNS/onnx"
mkdir -p "$GRIDS"
touch "$RESULTS"

# Classifiers (feature extractors): trained once.
[ -f "$RUNS/classifier-fmnist.done" ] || {
  "$TRAIN" classifier --data "$FMNIST" --out "$RUNS/classifier-fmnist" | tee "$RUNS/classifier-fmnist.log"
  touch "$RUNS/classifier-fmnist.done"
}
if [ -d "$EMOJI" ]; then
  [ -f "$RUNS/classifier-emoji.done" ] || {
    "$TRAIN" classifier --data "$EMOJI" --image-size 32 --image-channels 3 \
      --out "$RUNS/classifier-emoji" | tee "$RUNS/classifier-emoji.log"
    touch "$RUNS/classifier-emoji.done"
  }
fi

rows=()
# row DATASET METHOD MODEL STEPS SAMPLER (ONLY=text keeps the rows whose
# name holds it; MAX_STEPS skips longer rows)
row() { rows+=("$1|$2|$3|$4|$5"); }
# Longest first, so the two slots stay busy.
for s in 512 64 16 8 4; do
  row fmnist "teacher aDDIM" fmnist-teacher $s addim
  row fmnist "teacher DDIM" fmnist-teacher $s ddim
done
# aDDIM with a smaller eta in its xvar table (train.sh makes these copies).
for s in 64 16 8 4; do
  row fmnist "teacher aDDIM, eta 0.25" fmnist-teacher-xv0.25 $s addim
  row fmnist "teacher aDDIM, eta 0.1" fmnist-teacher-xv0.1 $s addim
done
for T in 16 8 4 2 1; do
  row fmnist CD "fmnist-cd$T" $T ddim
  row fmnist CT "fmnist-ct$T" $T ddim
done
# Progressive distillation from 64 steps: the student of stage k (file
# stage-k) samples in 64 / 2^(k+1) steps; the run's last checkpoint is the
# 1-step student.
for k in 2 3 4; do
  row fmnist PD "fmnist-pd-stage-$k" $((64 >> (k + 1))) ddim
done
row fmnist PD fmnist-pd 1 ddim
row fmnist "CD, fixed 128 teacher steps" fmnist-cd4-fixed128 4 ddim
row fmnist "CD, DDIM teacher" fmnist-cd4-ddimteacher 4 ddim
row fmnist "shipped: CD, small preset" ship-cd4 4 ddim
row fmnist "shipped teacher, small preset" ship-teacher 64 addim
if [ -d "$EMOJI" ]; then
  for s in 64 16 8 4; do
    row emoji "teacher aDDIM" emoji-teacher $s addim
    row emoji "teacher DDIM" emoji-teacher $s ddim
  done
  for T in 8 4 2 1; do
    row emoji CD "emoji-cd$T" $T ddim
  done
fi

have() { # have NAME STEPS SAMPLER: the row is in results.jsonl
  grep -F "\"name\":\"$1\"" "$RESULTS" | grep -F "\"steps\":$2," | grep -qF "\"sampler\":\"$3\""
}

running=0
for r in "${rows[@]}"; do
  IFS='|' read -r ds method model steps sampler <<<"$r"
  name="$ds|$method"
  [ -n "$ONLY" ] && [[ "$name" != *$ONLY* ]] && continue
  if have "$name" "$steps" "$sampler"; then continue; fi
  if [ "$steps" -gt "$MAX_STEPS" ]; then
    echo "skip $name $steps $sampler: more than MAX_STEPS=$MAX_STEPS steps"
    continue
  fi
  if [ ! -f "$ONNX/$model.onnx" ]; then
    echo "skip $name $steps $sampler: $ONNX/$model.onnx missing"
    continue
  fi
  if [ "$ds" = fmnist ]; then data=$FMNIST; else data=$EMOJI; fi
  slug=$(echo "$ds-$method-$steps-$sampler" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '-' | tr -s '-')
  echo "eval $name steps=$steps sampler=$sampler"
  "$TRAIN" eval --model "$ONNX/$model.onnx" --classifier "$RUNS/classifier-$ds" --data "$data" \
    --n "$N" --steps "$steps" --sampler "$sampler" --seed 0 --threads "$THREADS" \
    --name "$name" --results "$RESULTS" --grid "$GRIDS/$slug.png" --floor --quiet \
    >"$RUNS/eval-$slug.log" 2>&1 || echo "FAILED $name $steps: $(tail -n 1 "$RUNS/eval-$slug.log")" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait
"$TRAIN" report --results "$RESULTS" --out "$DOC/RESULTS.md" --plots "$GRIDS"
