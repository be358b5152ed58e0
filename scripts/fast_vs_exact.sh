#!/usr/bin/env bash
# Bits per byte of tiny-lite quantized to every catalog format and to `learned` (a table per
# matrix), evaluated with exact kernels (f32 activations) and with fast kernels (int8
# activations), on the held-out text.
# Usage: scripts/fast_vs_exact.sh [TQUANT] [WORKDIR]  (prints a Markdown table)
set -euo pipefail
tq=${1:-target/release/tquant}
dir=${2:-$(mktemp -d)}
text=tests/data/model/heldout_head.txt
bpb() { "$tq" eval "$1" --text "$text" --max-bytes 65792 --json "${@:2}" | sed 's/.*"bits_per_byte":\([0-9.]*\).*/\1/'; }
echo "| format | exact | fast | fast - exact |"
echo "|---|---:|---:|---:|"
for f in $("$tq" formats | awk 'NR > 1 {print $1}') learned; do
  "$tq" convert examples/tiny-lite -o "$dir/$f" --format "$f" --force >/dev/null
  e=$(bpb "$dir/$f")
  q=$(bpb "$dir/$f" --fast)
  printf '| `%s` | %.4f | %.4f | %+.4f |\n' "$f" "$e" "$q" "$(echo "$q - $e" | bc -l)"
done
