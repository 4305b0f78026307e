#!/usr/bin/env bash
# `make demo`: run the example pipelines end to end on the local emulator (no API key).
set -euo pipefail
cd "$(dirname "$0")/.."
bf=.venv/bin/batchflow
rm -rf .demo out
mkdir -p .demo

# At --speed 3600 a job of an hour takes a second.
"$bf" emulator --port 0 --speed 3600 > .demo/emulator.log 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q '^listening on ' .demo/emulator.log && break
  kill -0 "$emulator" 2>/dev/null || { cat .demo/emulator.log; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' .demo/emulator.log | head -n 1)
[ -n "$url" ] || { echo "emulator did not start"; cat .demo/emulator.log; exit 1; }

export BATCHFLOW_API_BASE_URL="$url" BATCHFLOW_STATE=.demo/state BATCHFLOW_POLL_INTERVAL=0.5
unset GEMINI_API_KEY GOOGLE_API_KEY  # the demo never sends a real key anywhere

echo "== emulator at $url"
echo "== batchflow validate";      "$bf" validate pipelines/examples
echo "== batchflow plan";          "$bf" plan pipelines/examples
echo "== batchflow apply --wait";  "$bf" apply --wait pipelines/examples
echo "== batchflow apply (again: nothing to do)"; "$bf" apply pipelines/examples
echo "== batchflow status";        "$bf" status pipelines/examples
echo "== batchflow report (the qa-eval example's variants, compared)"
"$bf" report pipelines/examples
"$bf" report pipelines/examples --format html --out out/qa-eval-report.html
echo
echo "Results in out/:"
# One row of each output, whatever its format (CSV and Parquet read back as a dict).
for f in out/*; do
  case "$f" in *.html) echo "  $f: open it in a browser (the chart needs no network)"; continue;; esac
  [ -s "$f" ] || { echo "  $f (empty)"; continue; }
  echo "  $f, one row:"
  .venv/bin/python - "$f" <<'PY' | cut -c1-700 | sed 's/^/    /'
import csv, json, sys
path = sys.argv[1]
if path.endswith(".parquet"):
    import pyarrow.parquet as pq
    rows = pq.read_table(path).to_pylist()
    # The row that shows the most: a function call if there is one.
    row = next((r for r in rows if r.get("function_calls")), rows[0])
elif path.endswith(".csv"):
    with open(path, newline="") as f:
        row = next(csv.DictReader(f))
else:
    with open(path) as f:
        row = json.loads(f.readline())
if isinstance(row.get("embedding"), list):
    row["embedding"] = row["embedding"][:4] + ["..."]
print(json.dumps(row, ensure_ascii=False, default=str))
PY
done
