"""`plan` over 100 finished pipelines in one folder: what a CI run pays when nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINES = 100
SPEC = """version: 1
name: p{n}
model: gemini-3.8-flash
source: {{uri: data/p{n}.jsonl, key: "{{{{ id }}}}"}}
request: {{prompt: "Say {{{{ word }}}}"}}
output: {{uri: out/p{n}.jsonl}}
"""


def main() -> None:
    from batchflow.emulator import EmulatorServer

    with tempfile.TemporaryDirectory() as tmp, EmulatorServer(speed=3600) as emulator:
        root = Path(tmp)
        (root / "batchflow.yaml").write_text("version: 1\nstate: .batchflow\npipelines: [pipelines]\n")
        for n in range(PIPELINES):
            (root / "pipelines/data").mkdir(parents=True, exist_ok=True)
            (root / f"pipelines/p{n}.yaml").write_text(SPEC.format(n=n))
            rows = "".join(json.dumps({"id": i, "word": f"w{i}"}) + "\n" for i in range(20))
            (root / f"pipelines/data/p{n}.jsonl").write_text(rows)
        env = {**os.environ, "BATCHFLOW_API_BASE_URL": emulator.url, "BATCHFLOW_POLL_INTERVAL": "0.05"}
        run = [sys.executable, "-m", "batchflow"]
        subprocess.run([*run, "apply", "--wait"], cwd=root, env=env, check=True, capture_output=True)
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            done = subprocess.run(
                [*run, "plan"], cwd=root, env=env, check=True, capture_output=True, text=True
            )
            timings.append(time.perf_counter() - start)
        assert "No changes" in done.stdout, done.stdout
        start = time.perf_counter()
        subprocess.run([*run, "--version"], env=env, check=True, capture_output=True)
        startup = time.perf_counter() - start
    print(
        f"\nplan over {PIPELINES} finished pipelines: {min(timings):.2f} s "
        f"(the command's start-up alone: {startup:.2f} s)"
    )


if __name__ == "__main__":
    main()
