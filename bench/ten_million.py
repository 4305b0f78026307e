"""Ten million records through `apply --wait` on the emulator (issue "Scale", goal 3).

Generates BENCH_BIG_RECORDS records (default 10,000,000: about 1.2 GB of JSONL), then runs
each phase as its own `batchflow` process against `batchflow emulator`, reporting wall time,
throughput and peak RSS (the command's process, and its largest worker's when it has workers):

1. `apply` without --wait: read, render, hash, shard, index, upload, create the jobs (the
   emulator's clock stands nearly still meanwhile, so no job ends during this phase);
2. `apply --wait`, the clock moved a day on: the emulator answers every request, and apply
   downloads the results and writes the output;
3. the output written again from the results on disk, no API calls: JSONL, then Parquet
   (the spec's output changes; nothing is sent again), beside a plain script that reads the
   same result files and writes the same JSONL rows (its baseline).

Everything lives in a temporary folder under BENCH_DIR (default the system's); it needs about
8 GB of disk for ten million records.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

RECORDS = int(os.environ.get("BENCH_BIG_RECORDS", 10_000_000))
SPEC = """
version: 1
name: big
model: gemini-3.8-flash
source: {{uri: data.jsonl, key: "{{{{ sku }}}}"}}
request:
  prompt: "Tag this product. Title: {{{{ title }}}} Description: {{{{ description }}}}"
batch: {{max_requests: 100000, max_bytes: 1GB}}
output: {{uri: {output}, columns: [title]}}
"""


def _generate(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            description = f"A sturdy thing that does what it says, model {i % 97}."
            f.write(f'{{"sku": "S{i}", "title": "Product {i}", "description": "{description}"}}\n')


def proc_status(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status, as its number (kB for memory)."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(x for x in f if x.startswith(field)).split()[1])


def _sample_descendants(root: int, peak: list[int], done: threading.Event) -> None:
    """The largest peak RSS (kB) among `root`'s descendants, read from /proc each half second:
    workers born of a fork server are not the command's children, so its RUSAGE_CHILDREN
    misses them. Sampled from here, not from a thread in the command: a command with a
    thread of its own starts its workers from the fork server instead of forking them."""
    while not done.is_set():
        parents = {}
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                parents[int(entry)] = proc_status(int(entry), "PPid:")
            except (OSError, StopIteration):
                pass
        ours, grew = {root}, True
        while grew:
            before = len(ours)
            ours |= {pid for pid, parent in parents.items() if parent in ours}
            grew = len(ours) > before
        for pid in ours - {root}:
            try:
                peak[0] = max(peak[0], proc_status(pid, "VmHWM:"))
            except (OSError, StopIteration):
                pass
        done.wait(0.5)


# The command, printing its own peak RSS (MB) when it ends.
_COMMAND = (
    "import resource, sys\n"
    "from batchflow.cli import main\n"
    "try:\n    main()\n"
    "finally:\n"
    "    print(f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}', file=sys.stderr)\n"
)


def run_batchflow(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Wall seconds and peak RSS (MB) of one batchflow command, run in its own process: its
    own, and its largest worker's when it had workers ("main + worker")."""
    peak, done = [0], threading.Event()
    start = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, "-c", _COMMAND, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        sampler = threading.Thread(target=_sample_descendants, args=(child.pid, peak, done), daemon=True)
        sampler.start()
        stdout, stderr = child.communicate()
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"batchflow {' '.join(args)} failed:\n{stdout[-2000:]}{stderr[-2000:]}")
    own, worker = stderr.strip().splitlines()[-1], peak[0] / 1024
    return elapsed, own + (f" + {worker:.0f}" if worker > 20 else "")


def start_emulator(speed: str, folder: str) -> tuple[subprocess.Popen, str]:
    """`batchflow emulator` on a free port, its files under `folder`; the process and its URL."""
    emulator = subprocess.Popen(
        [sys.executable, "-m", "batchflow", "emulator", "--port", "0", "--speed", speed],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": folder},
    )
    return emulator, emulator.stdout.readline().strip().removeprefix("listening on ")


def _plain_join(folder: Path, out: Path) -> tuple[float, str]:
    """The baseline for the output join: a script that reads the result files and writes one
    JSONL row per result line (key and text), with no ordering by source and no index."""
    code = f"""
import json, resource, sys
from pathlib import Path
with open({str(out)!r}, "w", encoding="utf-8") as out:
    for path in sorted(Path({str(folder)!r}).rglob("results/*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                text = r["response"]["candidates"][0]["content"]["parts"][0]["text"]
                out.write(json.dumps({{"key": r["key"], "text": text}}, ensure_ascii=False) + "\\n")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)
"""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, f"{float(done.stderr.strip().splitlines()[-1]):.0f}"


def main() -> None:
    n = RECORDS
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        _generate(folder / "data.jsonl", n)
        size_mb = (folder / "data.jsonl").stat().st_size / 1024**2
        print(
            f"\n{n:,} records, {size_mb:,.0f} MB of JSONL (generated in {time.perf_counter() - start:.0f} s)"
        )
        (folder / "spec.yaml").write_text(SPEC.format(output="out.jsonl"))
        emulator, url = start_emulator("0.001", tmp)
        try:
            env = {
                **os.environ,
                "BATCHFLOW_API_BASE_URL": url,
                "BATCHFLOW_STATE": str(folder / "state"),
                "BATCHFLOW_POLL_INTERVAL": "1",
                "CI": "true",
            }
            rows = []
            prepare_s, prepare_mb = run_batchflow(["apply", "spec.yaml"], env, folder)
            rows.append(("prepare, upload, create (apply)", prepare_s, n / prepare_s, prepare_mb))
            clock = urllib.request.Request(
                f"{url}/_emulator/clock", data=b'{"advance": 86400, "speed": 1000}', method="POST"
            )
            urllib.request.urlopen(clock).close()
            wait_s, wait_mb = run_batchflow(["apply", "--wait", "spec.yaml"], env, folder)
            rows.append(("answer, download, write JSONL (apply --wait)", wait_s, n / wait_s, wait_mb))
            assert sum(1 for _ in open(folder / "out.jsonl", "rb")) == n
            (folder / "out.jsonl").unlink()
            jsonl_s, jsonl_mb = run_batchflow(["apply", "spec.yaml"], env, folder)
            rows.append(("output join, JSONL (apply, no API calls)", jsonl_s, n / jsonl_s, jsonl_mb))
            (folder / "spec.yaml").write_text(SPEC.format(output="out.parquet"))
            parquet_s, parquet_mb = run_batchflow(["apply", "spec.yaml"], env, folder)
            rows.append(("output join, Parquet (apply, no API calls)", parquet_s, n / parquet_s, parquet_mb))
            plain_s, plain_mb = _plain_join(folder / "state", folder / "plain.jsonl")
            rows.append(("baseline: plain script, result files to JSONL", plain_s, n / plain_s, plain_mb))
            emulator_mb = proc_status(emulator.pid, "VmHWM:") / 1024
        finally:
            emulator.terminate()
            emulator.wait()
        print(f"{'phase':<48} {'s':>8} {'rows/s':>10} {'peak MB':>10}")
        for name, seconds, rate, mb in rows:
            print(f"{name:<48} {seconds:>8.1f} {rate:>10,.0f} {mb:>10}")
        print(f"JSONL join / plain script: {jsonl_s / plain_s:.2f}x; emulator peak RSS {emulator_mb:.0f} MB")


if __name__ == "__main__":
    main()
