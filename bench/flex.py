"""The Flex tier through the emulator: 2,000 requests with a tenth of the calls shed, and a
200-record pipeline on `tier: auto` (flex) beside the same on batch.

The emulator answers a flex call after a latency drawn on its clock (exponential, mean 90
emulator seconds, at most 900), and a batch job after 90 s plus 0.05 s a request.
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
name: {name}
model: gemini-3.8-flash
tier: {tier}
flex: {{concurrency: {concurrency}}}
source: {{uri: data.jsonl, key: "{{{{ id }}}}"}}
request: {{prompt: "Say {{{{ id }}}}"}}
output: {{uri: out.jsonl}}
"""


def _run(root: Path, emulator_url: str, records: int, tier: str, concurrency: int) -> float:
    root.mkdir(parents=True)
    (root / "data.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in range(records)))
    (root / "spec.yaml").write_text(SPEC.format(name="bench", tier=tier, concurrency=concurrency))
    env = {
        **os.environ,
        "BATCHFLOW_API_BASE_URL": emulator_url,
        "BATCHFLOW_STATE": str(root / "state"),
        "BATCHFLOW_POLL_INTERVAL": "0.5",
    }
    start = time.perf_counter()
    command = [sys.executable, "-m", "batchflow", "apply", "--wait", "spec.yaml"]
    subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    assert len((root / "out.jsonl").read_text().splitlines()) == records
    return seconds


def main() -> None:
    from batchflow.emulator import EmulatorServer
    from batchflow.emulator.faults import Faults

    print("\nFlex through the emulator:")
    with tempfile.TemporaryDirectory() as tmp:
        speed, concurrency = 3600, 16
        with EmulatorServer(speed=speed, faults=Faults(flex_shed_rate=0.1)) as emulator:
            seconds = _run(Path(tmp) / "flex", emulator.url, 2000, "flex", concurrency)
            calls, shed = emulator.store.flex_calls, emulator.store.flex_shed
        ideal = concurrency / (90 / speed)  # calls a second if every slot were always busy
        print(
            f"  2,000 requests on flex, 10% shed, {concurrency} at once ({speed}x clock): {seconds:.1f} s, "
            f"all answered; {calls:,} calls ({shed:,} shed and retried), {calls / seconds:,.0f} calls/s "
            f"against {ideal:,.0f}/s if every slot were always busy"
        )
        speed = 60
        with EmulatorServer(speed=speed) as emulator:
            on_auto = _run(Path(tmp) / "auto", emulator.url, 200, "auto", 32)
            on_batch = _run(Path(tmp) / "batch", emulator.url, 200, "batch", 32)
        print(
            f"  200 records end to end ({speed}x clock): tier auto (flex, 32 at once) {on_auto:.1f} s, "
            f"batch {on_batch:.1f} s"
        )


if __name__ == "__main__":
    main()
