#!/usr/bin/env bash
# Builds libfewstep in release mode and installs the C library, header and
# pkg-config file under PREFIX (default /usr/local):
#   bash scripts/install-c.sh [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-/usr/local}"
cargo build --release -p fewstep-ffi
target="${CARGO_TARGET_DIR:-target}/release"
version=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="fewstep-ffi"))')
install -d "$prefix/lib" "$prefix/include" "$prefix/lib/pkgconfig"
install -m 0644 "$target/libfewstep.a" "$prefix/lib/"
install -m 0755 "$target/libfewstep.so" "$prefix/lib/"
install -m 0644 include/fewstep.h "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" ffi/fewstep.pc.in > "$prefix/lib/pkgconfig/fewstep.pc"
echo "installed libfewstep $version under $prefix"
