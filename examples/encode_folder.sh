#!/usr/bin/env bash
# Encode every PNG/JPEG under a folder into .anf files beside a mirror tree, N jobs at a time.
#   examples/encode_folder.sh PHOTOS OUT [QUALITY] [JOBS]
# Each job is one `anfcodec encode` process; a failed file is reported and the batch goes on.
set -euo pipefail
src=${1:?usage: encode_folder.sh SRC OUT [QUALITY] [JOBS]}
out=${2:?usage: encode_folder.sh SRC OUT [QUALITY] [JOBS]}
quality=${3:-3}
jobs=${4:-2}
export out quality src
find "$src" -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \) -print0 |
  xargs -0 -P "$jobs" -I{} sh -c '
    rel=${1#"$src"/}; dst="$out/${rel%.*}.anf"; mkdir -p "$(dirname "$dst")"
    if anfcodec encode "$1" -o "$dst" --quality "$quality" -f; then echo "ok   $1"; else echo "FAIL $1" >&2; fi
  ' _ {}
