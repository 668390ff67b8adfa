#!/usr/bin/env bash
# The offline demo end to end: wall time and peak memory of `embedforge run`.
#   bash bench/bench_demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
HF_HUB_OFFLINE=1 /usr/bin/time -v .venv/bin/embedforge run deployments/demo-minilm.yaml \
    --output-dir "$out" --set push.local_dir="$out/published" > "$out/log" 2> "$out/time"
tail -3 "$out/log"
grep -E "Elapsed \(wall clock\)|Maximum resident set size" "$out/time"
python3 -c "import json,glob; m=json.load(open(glob.glob('$out/demo-minilm/*/metrics.json')[0])); h=m['headline']; print(h, 'base', round(m['base'][h],4), 'fine-tuned', round(m['finetuned'][h],4))"
