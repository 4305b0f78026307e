"""`make bench`: batchflow against a plain hand-written script doing the same work.

Work measured: read N JSONL records, render each into a Batch API request line
with a template, and write the lines into shard files. Each side runs in its
own process; we report wall time and peak RSS, and batchflow/baseline ratios,
at two input sizes so that growth with input size shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (50_000, 300_000)
SPEC = """
version: 1
name: bench
model: gemini-3.8-flash
source: {uri: data.jsonl, key: "{{ sku }}"}
request:
  system: You tag products.
  prompt: "Tag this product. Title: {{ title }} Description: {{ description }}"
batch: {max_requests: 50000}
output: {uri: out.jsonl}
"""


def batchflow_side(folder: Path) -> None:
    from batchflow.run.reconcile import scan
    from batchflow.spec.loader import load_pipelines
    from batchflow.state.store import LocalStore, PipelineState

    (pipeline,) = load_pipelines([folder / "spec.yaml"])
    store = LocalStore(folder / "state")
    with contextlib.closing(store.index("bench")) as index:
        scan(pipeline, PipelineState(pipeline="bench"), store, index, write=True, keep_order=True)


def baseline_side(folder: Path) -> None:
    """What a user would write by hand: no hashing, no state, one output file per 50k lines."""
    out_dir = folder / "plain"
    out_dir.mkdir()
    out, n = None, 0
    with open(folder / "data.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            request = {
                "contents": [
                    {
                        "role": "user",
                        "parts": [
                            {
                                "text": (
                                    f"Tag this product. Title: {r['title']} Description: {r['description']}"
                                )
                            }
                        ],
                    }
                ],
                "systemInstruction": {"parts": [{"text": "You tag products."}]},
            }
            if n % 50_000 == 0:
                if out:
                    out.close()
                out = open(out_dir / f"{n}.jsonl", "w", encoding="utf-8")
            out.write(json.dumps({"key": r["sku"], "request": request}) + "\n")
            n += 1
    if out:
        out.close()


def plan_command(folder: Path) -> float:
    """`batchflow plan` as a user runs it (start-up included), on a state that has nothing yet."""
    from ten_million import run_batchflow

    env = {**os.environ, "BATCHFLOW_STATE": str(folder / "plan-state"), "CI": "true"}
    return run_batchflow(["plan", "spec.yaml"], env, folder)[0]


def measure(side: str, folder: Path) -> tuple[float, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, side, str(folder)], check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    return elapsed, float(done.stdout)  # the child's own peak RSS, MB


def poll(folder: Path) -> tuple[float, float, float]:
    """Scans as apply makes them: the first (it renders everything and writes the shards),
    one while nothing changed (what a poll pays), and one after results arrived, which
    checks the first one's order file against the index instead of rendering."""
    from batchflow.run.reconcile import scan
    from batchflow.spec.loader import load_pipelines
    from batchflow.state.store import LocalStore, PipelineState, Shard, ShardStatus

    (pipeline,) = load_pipelines([folder / "spec.yaml"])
    store = LocalStore(folder / "poll-state")
    state = PipelineState(pipeline="bench")
    with contextlib.closing(store.index("bench")) as index:
        start = time.perf_counter()
        first = scan(pipeline, state, store, index, write=True, keep_order=True)
        full = time.perf_counter() - start
        state.scan_memo = first.memo
        for info in first.new_shards:  # at work: they cover their requests
            state.shards[info.id] = Shard(
                id=info.id, status=ShardStatus.SUBMITTED, requests=info.requests, bytes=info.bytes
            )
        start = time.perf_counter()
        scan(pipeline, state, store, index, write=True, keep_order=True)
        unchanged = time.perf_counter() - start
        state.scan_memo = first.memo.model_copy(update={"results": "before they arrived"})
        start = time.perf_counter()
        again = scan(pipeline, state, store, index, write=True, keep_order=True)
        arrived = time.perf_counter() - start
        assert not again.new_shards and again.digest == first.digest
        return full, unchanged, arrived


def main() -> None:
    print("Prepare (read, render, hash, shard, index) beside a hand-written json script:")
    print(f"{'records':>8} {'batchflow s':>12} {'plain s':>8} {'ratio':>6} {'bf MB':>7} {'plain MB':>9}")
    polls, plans = [], []
    for n in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "spec.yaml").write_text(SPEC)
            with open(folder / "data.jsonl", "w") as f:
                for i in range(n):
                    f.write(
                        json.dumps(
                            {
                                "sku": f"S{i}",
                                "title": f"Product {i}",
                                "description": "A sturdy thing that does what it says. " * 3,
                            }
                        )
                        + "\n"
                    )
            plain_s, plain_mb = measure("baseline", folder)
            bf_s, bf_mb = measure("batchflow", folder)
            print(
                f"{n:>8} {bf_s:>12.2f} {plain_s:>8.2f} {bf_s / plain_s:>6.2f} {bf_mb:>7.0f} {plain_mb:>9.0f}"
            )
            full, memo, arrived = poll(folder)
            polls.append(f"{n:>8} {full:>12.2f} {memo:>10.4f} {arrived:>16.2f}")
            plan_s = plan_command(folder)
            plans.append(f"{n:>8} {plan_s:>12.2f} {plain_s:>8.2f} {plan_s / plain_s:>6.2f}")
    print("\nApply's scans: the first (renders, writes shards); a poll while nothing changed (renders")
    print("nothing); one after results arrived (from the first one's order file, renders nothing):")
    print(f"{'records':>8} {'first scan s':>12} {'poll s':>10} {'after results s':>16}")
    print("\n".join(polls))
    print("\n`batchflow plan` (the command, start-up included; it writes no shards) beside the same script:")
    print(f"{'records':>8} {'plan s':>12} {'plain s':>8} {'ratio':>6}")
    print("\n".join(plans))


if __name__ == "__main__":
    if len(sys.argv) == 1:
        main()
        import emulator_memory
        import evals
        import flex
        import noop_plan
        import remote_state
        import stages
        import startup
        import ten_million
        import validate_many

        startup.main()
        validate_many.main()
        noop_plan.main()
        stages.main()
        flex.main()
        evals.main()
        emulator_memory.main()
        remote_state.main()
        ten_million.main()  # the longest by far: BENCH_BIG_RECORDS=1000000 for a quicker look
    elif len(sys.argv) == 3:
        {"batchflow": batchflow_side, "baseline": baseline_side}[sys.argv[1]](Path(sys.argv[2]))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
