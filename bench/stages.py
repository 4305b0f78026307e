"""A three-stage chain beside one stage alone, on the emulator at a fixed clock.

Every stage has 60 records in shards of 10, at most 2 jobs at work: three waves of jobs each.
Run one after another, the chain takes about three times one stage; a map stage starts on its
upstream's first answers, so the goal is at most twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEEDUP = 60  # emulator seconds a second: a job (90 s and 0.05 s a request) takes about 1.6 s
STAGE = """version: 1
name: {name}
model: gemini-3.8-flash
source: {source}
request: {{prompt: "Step {name}: {{{{ text }}}}"}}
batch: {{max_requests: 10, max_concurrent_jobs: 2}}
output: {{uri: {name}.jsonl, columns: [{columns}]}}
"""


def _write(root: Path, stages: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": f"record {i}"}) + "\n" for i in range(60))
    )
    docs = []
    for n in range(stages):
        source = '{uri: data.jsonl, key: "{{ id }}"}' if n == 0 else f"{{pipeline: s{n - 1}}}"
        docs.append(STAGE.format(name=f"s{n}", source=source, columns="" if n else "text"))
    (root / "chain.yaml").write_text("---\n".join(docs))


def _timed(root: Path, env: dict[str, str], *commands: list[str]) -> float:
    start = time.perf_counter()
    for command in commands:
        subprocess.run(
            [sys.executable, "-m", "batchflow", *command], cwd=root, env=env, check=True, capture_output=True
        )
    return time.perf_counter() - start


def main() -> None:
    from batchflow.emulator import EmulatorServer

    with tempfile.TemporaryDirectory() as tmp, EmulatorServer(speed=SPEEDUP) as emulator:
        env = {**os.environ, "BATCHFLOW_API_BASE_URL": emulator.url, "BATCHFLOW_POLL_INTERVAL": "0.2"}
        runs = {}
        for label, stages, commands in (
            ("one stage", 1, [["apply", "--wait", "chain.yaml"]]),
            (
                "three stages, one after another",
                3,
                [["apply", "--wait", "chain.yaml", "--target", f"s{n}"] for n in range(3)],
            ),
            ("three stages, overlapping", 3, [["apply", "--wait", "chain.yaml"]]),
        ):
            root = Path(tmp) / label.replace(" ", "-").replace(",", "")
            _write(root, stages)
            runs[label] = _timed(root, {**env, "BATCHFLOW_STATE": str(root / "state")}, *commands)
    one = runs["one stage"]
    print(f"\nStages on the emulator ({SPEEDUP}x clock; 60 records a stage, 3 waves of 2 jobs):")
    for label, seconds in runs.items():
        print(f"  {label:<34} {seconds:6.1f} s  {seconds / one:4.1f}x one stage")


if __name__ == "__main__":
    main()
