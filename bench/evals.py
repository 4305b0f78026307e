"""An eval's long form and report beside a hand-written script doing the same work.

A matrix of 4 variants (2 models x 2 temperatures) over N records, answered on the emulator
and scored by `contains`. Measured once every variant is answered:

- batchflow: `apply` writing the long-form output (every variant up to date: it joins each
  variant's results from its state and scores them), then `report --format markdown`;
- the script: read the source and each variant's answers keyed by record (as a script that
  made its own batch files by record id would have them), write the same long form as JSONL
  with the same scores, and print each variant's answered count, mean score and tokens.

Each side runs in its own process (start-up included); wall time and peak RSS, at two sizes,
so that growth with input size shows.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (5_000, 20_000)
SPEC = """version: 1
name: ev
model: gemini-3.8-flash
source: {uri: data.jsonl, key: "{{ id }}"}
request: {prompt: "Question {{ id }}: {{ question }}"}
matrix:
  model: [gemini-3.8-flash, gemini-3.5-flash-lite]
  generation_config.temperature: [0.0, 1.0]
score: {expected: "{{ question }}", metric: contains}
batch: {max_requests: 50000}
output: {uri: long.jsonl, columns: [question]}
"""


def _measured(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a Python process running `argv`."""
    wrapper = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_module(sys.argv[0], run_name='__main__') if sys.argv[0] == 'batchflow' "
        "else runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        # VmHWM, not ru_maxrss: that one keeps the forking parent's peak across exec.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(hwm.split()[1]) / 1024, file=sys.stderr)\n"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *argv], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - start, float(done.stderr.strip().splitlines()[-1])


def script(folder: str) -> None:
    """The hand-written side: join, score, write the long form, summarize."""
    root = Path(folder)
    records = [json.loads(line) for line in open(root / "data.jsonl", encoding="utf-8")]
    stats = []
    with open(root / "plain.jsonl", "w", encoding="utf-8") as out:
        for answers_file in sorted(root.glob("answers-*.jsonl")):
            model, temperature = answers_file.stem.split("-", 1)[1].rsplit("-", 1)
            answers = {}
            with open(answers_file, encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    answers[row["key"]] = row
            n = hits = tokens = 0
            for record in records:
                answer = answers.get(str(record["id"]))
                row = {"key": str(record["id"]), "model": model, "temperature": float(temperature)}
                row["question"] = record["question"]
                if answer is None:
                    row["error"] = {"message": "no result"}
                else:
                    score = 1.0 if record["question"].strip().casefold() in answer["text"].casefold() else 0.0
                    row.update(text=answer["text"], usage=answer["usage"], expected=record["question"])
                    row["score"] = score
                    n, hits, tokens = n + 1, hits + score, tokens + answer["usage"]["total_tokens"]
                out.write(json.dumps(row) + "\n")
            mean = hits / n if n else 0.0
            stats.append((model, temperature, n, mean, math.sqrt(mean * (1 - mean) / max(n, 1)), tokens))
    for model, temperature, n, mean, se, tokens in stats:
        print(f"| {model}, {temperature} | {n} | {mean:.2f} ± {1.96 * se:.2f} | {tokens} |")


def main() -> None:
    from batchflow.emulator import EmulatorServer

    rows = []
    with tempfile.TemporaryDirectory() as tmp, EmulatorServer(speed=3600) as emulator:
        for n in SIZES:
            root = Path(tmp) / str(n)
            root.mkdir()
            (root / "data.jsonl").write_text(
                "".join(json.dumps({"id": i, "question": f"what is item {i}?"}) + "\n" for i in range(n))
            )
            (root / "ev.yaml").write_text(SPEC)
            env = {
                **os.environ,
                "BATCHFLOW_API_BASE_URL": emulator.url,
                "BATCHFLOW_STATE": str(root / "state"),
                "BATCHFLOW_POLL_INTERVAL": "0.2",
            }
            subprocess.run(
                [sys.executable, "-m", "batchflow", "apply", "--wait", "ev.yaml"],
                cwd=root,
                env=env,
                check=True,
                capture_output=True,
            )
            # The script's inputs: each variant's answers by record, from the long form.
            files: dict[str, list[str]] = {}
            for line in open(root / "long.jsonl", encoding="utf-8"):
                row = json.loads(line)
                name = f"answers-{row['model']}-{row['temperature']}"
                keep = {"key": row["key"], "text": row["text"], "usage": row["usage"]}
                files.setdefault(name, []).append(json.dumps(keep))
            for name, lines in files.items():
                (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
            # batchflow: the long form written again from the states, then the report.
            (root / "long.jsonl").unlink()
            shutil.rmtree(next((root / "state").glob("ev-output.*")))
            write_s, write_mb = _measured(["batchflow", "apply", "ev.yaml"], root, env)
            report_s, report_mb = _measured(["batchflow", "report", "ev.yaml"], root, env)
            plain_s, plain_mb = _measured([__file__, "script", str(root)], root, env)
            same = sum(1 for _ in open(root / "long.jsonl")) == sum(1 for _ in open(root / "plain.jsonl"))
            assert same, "the two long forms differ in length"
            bf_s, bf_mb = write_s + report_s, max(write_mb, report_mb)
            rows.append(
                f"{n:>8} {4 * n:>7} {write_s:>8.2f} {report_s:>9.2f} {plain_s:>8.2f} {bf_s / plain_s:>6.1f}"
                f" {bf_mb:>8.0f} {plain_mb:>9.0f}"
            )
    print("\nAn eval's long form and report (4 variants, contains), beside a hand-written script:")
    head = f"{'records':>8} {'rows':>7} {'write s':>8} {'report s':>9} {'plain s':>8} {'ratio':>6}"
    print(head + f" {'bf MB':>8} {'plain MB':>9}")
    print("\n".join(rows))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "script":
        script(sys.argv[2])
    else:
        main()
