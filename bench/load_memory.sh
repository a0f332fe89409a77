#!/usr/bin/env bash
# Peak RSS of loading each model through fewstep_model_load (path),
# fewstep_model_load_bytes (an app's buffer) and fewstep_model_load_fd, one
# process per row (Linux). Usage: bench/load_memory.sh [MODEL.onnx ...]
# (default: the shipped model and the previous, 45 k-parameter one).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p fewstep-ffi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -O2 -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Iinclude \
  bench/load_memory.c target/release/libfewstep.a -lm -lpthread -ldl -o "$out/load_memory"
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(examples/models/fmnist-cd4.onnx)
  models+=(runtime/tests/data/fmnist-tiny-cd4.onnx)
fi
printf '| model | file | way | RSS before | peak RSS | RSS after | peak − before | peak − before / file |\n|---|---:|---|---:|---:|---:|---:|---:|\n'
for m in "${models[@]}"; do
  for way in path bytes fd; do
    line=$("$out/load_memory" "$m" "$way")
    kv() { tr '\t' '\n' <<<"$line" | sed -n "s/^$1=//p"; }
    file=$(kv file_kib); before=$(kv before_kib); peak=$(kv peak_kib); after=$(kv after_kib); d=$(kv peak_minus_before_kib)
    awk -v m="$(basename "$m")" -v w="$way" -v f="$file" -v b="$before" -v p="$peak" -v a="$after" -v d="$d" \
      'BEGIN { printf "| %s | %.1f MiB | %s | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.2f× |\n", m, f/1024, w, b/1024, p/1024, a/1024, d/1024, d/f }'
  done
done
