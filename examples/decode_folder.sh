#!/usr/bin/env bash
# Decode every .anf under a folder to PNG in a mirror tree, N jobs at a time.
#   examples/decode_folder.sh ANF_DIR OUT [JOBS]
set -euo pipefail
src=${1:?usage: decode_folder.sh SRC OUT [JOBS]}
out=${2:?usage: decode_folder.sh SRC OUT [JOBS]}
jobs=${3:-2}
export out src
find "$src" -type f -name '*.anf' -print0 |
  xargs -0 -P "$jobs" -I{} sh -c '
    rel=${1#"$src"/}; dst="$out/${rel%.anf}.png"; mkdir -p "$(dirname "$dst")"
    if anfcodec decode "$1" -o "$dst" -f; then echo "ok   $1"; else echo "FAIL $1" >&2; fi
  ' _ {}
