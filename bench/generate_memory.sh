#!/usr/bin/env bash
# Peak memory of a generation against the weights, the largest intermediate
# tensor and fewstep's own estimate (issue 16 §4), one process per row
# (Linux). Usage: bench/generate_memory.sh [MODEL.onnx ...]
# (default: the shipped model and the 45 k-parameter one).
# Columns (MiB): RSS after loading; peak RSS while generating; the peak of
# heap bytes in use while generating over those after the load (a counting
# allocator); the request's estimate (`Model::memory_estimate`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p fewstep --example generate_memory
bin=target/release/examples/generate_memory
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(examples/models/fmnist-cd4.onnx runtime/tests/data/fmnist-tiny-cd4.onnx)
fi
printf '| model | weights (f32) | largest tensor | batch | threads | execution | RSS after load | peak RSS | request heap peak | estimate | estimate / heap |\n'
printf '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n'
for m in "${models[@]}"; do
  for cfg in "1 1 per-image" "1 2 per-image" "8 1 per-image" "8 2 per-image" "8 2 batched"; do
    read -r batch threads exec <<<"$cfg"
    extra=()
    [ "$exec" = batched ] && extra=(batched)
    line=$("$bin" "$m" "$batch" "$threads" "${extra[@]}")
    kv() { tr '\t' '\n' <<<"$line" | sed -n "s/^$1=//p"; }
    awk -v m="$(basename "$m")" -v w="$(kv weights)" -v l="$(kv largest)" -v b="$batch" -v t="$threads" -v e="$exec" \
      -v ld="$(kv loaded)" -v p="$(kv peak)" -v h="$(kv heap)" -v est="$(kv estimate)" \
      'BEGIN { printf "| %s | %.1f | %.2f | %d | %d | %s | %.1f | %.1f | %.1f | %.1f | %.1f× |\n", m, w/1024, l/1024, b, t, e, ld/1024, p/1024, h/1024, est/1024, est/h }'
  done
done
