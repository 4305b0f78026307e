"""What a command costs before it does anything, and a poll of jobs at work beside `status`.

`--version` and `--help` should start in under 0.3 s; a poll (an `apply` while the jobs run:
it reads each job's state) should cost at most twice a `status`, which reads the state only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """version: 1
name: polled
model: gemini-3.8-flash
source: {uri: data.jsonl, key: "{{ id }}"}
request: {prompt: "Say {{ id }}"}
batch: {max_requests: 10}
output: {uri: out.jsonl}
"""


def _best(args: list[str], env: dict[str, str], cwd: Path, runs: int = 5) -> float:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "batchflow", *args], cwd=cwd, env=env, check=True, capture_output=True
        )
        timings.append(time.perf_counter() - start)
    return min(timings)


def main() -> None:
    from batchflow.emulator import EmulatorServer

    with tempfile.TemporaryDirectory() as tmp, EmulatorServer(speed=0.0001) as emulator:
        root = Path(tmp)
        (root / "spec.yaml").write_text(SPEC)
        (root / "data.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(50)))
        env = {**os.environ, "BATCHFLOW_API_BASE_URL": emulator.url, "BATCHFLOW_STATE": str(root / "state")}
        subprocess.run(
            [sys.executable, "-m", "batchflow", "apply", "spec.yaml"], cwd=root, env=env, check=True
        )
        version = _best(["--version"], env, root)
        help_ = _best(["--help"], env, root)
        status = _best(["status", "spec.yaml"], env, root)
        poll = _best(["apply", "spec.yaml"], env, root)  # five jobs at work: each is read
    print("\nStart-up (best of 5, the command as users run it):")
    print(f"  batchflow --version {version:.2f} s, --help {help_:.2f} s (goal: under 0.3 s)")
    ratio = poll / status
    print(f"  a poll of 5 jobs at work {poll:.2f} s, status {status:.2f} s: {ratio:.1f}x (goal: 2x at most)")


if __name__ == "__main__":
    main()
