"""The promise, checked over random histories: faults, retries, --retry-errors, spec edits,
model changes with jobs in flight, kill -9, and a runner paused (SIGSTOP) past its lease while
another takes over, in any order.

Whatever happened before, once `apply --wait` returns, the output holds exactly
one row per source record, in source order; each row is the latest result the
state holds for that record (or, for a request whose job failed for good, that
job's error); and the exit code is 3 exactly when more rows are errors than
the pipeline's errors policy tolerates. No two jobs on the service are for the same shard and
attempt (nothing was created twice), and none is left at work.

Half the histories (drawn apart, so that each seed's history is what it always was) add a
stage that reads the pipeline's answered rows: its output then holds one row per answered
upstream row, each the latest result its state holds for it. Half (drawn apart again) add an
eval, a matrix of models scored by a metric, whose values change between steps: its long form
then holds one row per record and variant of the matrix as it is at the end, each the latest
result that variant's state holds, with its score.

Nine histories run with the suite (the ninth pauses a runner before a create, the case that
once made a second job); PROMISE_SEEDS=40 runs more.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import httpx2 as httpx
import pytest
from conftest import TEST_SPEED, kill_apply, stopped, write

import batchflow
from batchflow.output.columns import result_fields
from batchflow.output.join import ResultReader
from batchflow.prepare.render import Renderer
from batchflow.run.reconcile import records
from batchflow.state.store import LocalStore

RECORDS = 6
SPEC = """
    version: 1
    name: promise
    model: MODEL
    source: {uri: data/in.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ word }}"}
    batch: {max_requests: 2}
    retry: {attempts: ATTEMPTS}
    output: {uri: out.jsonl}
    POLICY
"""


STAGE = """
    version: 1
    name: promise-next
    model: gemini-3.8-flash
    source: {pipeline: promise}
    request: {prompt: "Echo {{ text }}"}
    batch: {max_requests: 2}
    output: {uri: next.jsonl}
    POLICY
"""
MODELS = ["gemini-3.8-flash", "gemini-2.5-flash-lite"]
EVAL = """
    version: 1
    name: promise-eval
    source: {uri: data/in.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ word }}"}
    matrix: {model: EVAL_MODELS}
    score: {expected: "{{ word }}", metric: contains}
    batch: {max_requests: 3}
    output: {uri: eval.jsonl}
    POLICY
"""
EVAL_MODELS = ["gemini-3.8-flash", "gemini-3.5-flash-lite", "gemini-4-argon"]


def _spec(tmp_path, attempts: int, max_count: int | None, model: str = MODELS[0]) -> None:
    policy = f"errors: {{max_count: {max_count}}}" if max_count is not None else ""
    text = SPEC.replace("ATTEMPTS", str(attempts)).replace("POLICY", policy).replace("MODEL", model)
    write(tmp_path / "pipelines/promise.yaml", text)


def _random_faults(rng: random.Random) -> dict:
    return {
        "seed": rng.randrange(10_000),
        "line_error_rate": rng.choice([0, 0, 0.3]),
        "job_fail_rate": rng.choice([0, 0, 0.5]),
        "job_expire_rate": rng.choice([0, 0, 0.3]),
        "rate_limit_rate": rng.choice([0, 0.1]),
        "unavailable_rate": rng.choice([0, 0.1]),
        "expire_after": 60,  # emulator seconds: a job that never runs expires at once
    }


@pytest.mark.parametrize("seed", range(int(os.environ.get("PROMISE_SEEDS", "9"))))
def test_after_any_history_the_output_is_the_state(
    seed, cli, client, emulator, emulator_env, tmp_path, monkeypatch
):
    rng = random.Random(seed)
    monkeypatch.setenv("BATCHFLOW_HTTP_ATTEMPTS", "1")  # refused calls surface at once: --wait goes round
    write(
        tmp_path / "pipelines/data/in.jsonl",
        "".join(json.dumps({"id": i, "word": f"w{i}"}) + "\n" for i in range(RECORDS)),
    )
    max_count = rng.choice([None, 1, 4])
    staged = random.Random(f"stage {seed}").random() < 0.5
    policy = f"errors: {{max_count: {max_count}}}" if max_count is not None else ""
    if staged:
        write(tmp_path / "pipelines/next.yaml", STAGE.replace("POLICY", policy))
    matrix = random.Random(f"eval {seed}")  # its draws: the matrix's models at each step
    evaluated = matrix.random() < 0.5
    env = {**os.environ}
    model = MODELS[0]
    for _ in range(rng.randint(2, 4)):
        faults = _random_faults(rng)
        httpx.post(f"{emulator.url}/_emulator/faults", json=faults).raise_for_status()
        attempts = rng.randint(1, 3)
        _spec(tmp_path, attempts, max_count, model)
        if evaluated:  # values come and go between steps
            models = matrix.sample(EVAL_MODELS, matrix.randint(1, 3))
            text = EVAL.replace("EVAL_MODELS", json.dumps(models)).replace("POLICY", policy)
            write(tmp_path / "pipelines/eval.yaml", text)
        step = rng.random()
        if step < 0.35:
            kill_apply(env, after_lines=rng.randint(1, 8))
        elif step < 0.5:
            _pause_past_the_lease(env, rng.choice(["upload", "create", "cancel"]))
        elif step < 0.65:  # the model changes while its jobs are at work: they are superseded
            emulator.store.clock.set_speed(1)
            assert cli("apply").code in (0, 1, 3)
            model = MODELS[1 - MODELS.index(model)]
            _spec(tmp_path, attempts, max_count, model)
            assert cli("apply").code in (0, 1, 3)
            emulator.store.clock.set_speed(TEST_SPEED)
        else:
            retry = ["--retry-errors"] if rng.random() < 0.4 else []
            assert cli("apply", "--wait", *retry).code in (0, 3)

    result = cli("apply", "--wait")
    quiet = {"rate_limit_rate": 0, "unavailable_rate": 0}  # for the test's own look at the service
    httpx.post(f"{emulator.url}/_emulator/faults", json=quiet).raise_for_status()
    jobs = list(client.batches.list())
    assert len({j.display_name for j in jobs}) == len(jobs), sorted(j.display_name for j in jobs)
    assert not [j.name for j in jobs if not j.done]
    rows = _rows(tmp_path / "pipelines/out.jsonl")
    assert [r["key"] for r in rows] == [str(i) for i in range(RECORDS)]
    state = emulator_env["BATCHFLOW_STATE"]
    _assert_rows_are_the_states_results(tmp_path, state, "promise", rows)
    errors = [sum("error" in r for r in rows)]
    if staged:  # one row per answered upstream row, in its order
        below = _rows(tmp_path / "pipelines/next.jsonl")
        assert [r["key"] for r in below] == [r["key"] for r in rows if "error" not in r]
        _assert_rows_are_the_states_results(tmp_path, state, "promise-next", below)
        errors.append(sum("error" in r for r in below))
    if evaluated:  # one row per record and variant, the matrix's order, each its state's result
        long = _rows(tmp_path / "pipelines/eval.jsonl")
        assert [(r["model"], r["key"]) for r in long] == [(m, str(i)) for m in models for i in range(RECORDS)]
        for m in models:
            mine = [r for r in long if r["model"] == m]
            for r in mine:
                assert r["expected"] == f"w{r['key']}"
                assert ("score" in r) == ("error" not in r)
                assert r.get("score") in (None, float(f"w{r['key']}" in r.get("text", "")))
            plain = [{k: v for k, v in r.items() if k not in ("model", "expected", "score")} for r in mine]
            _assert_rows_are_the_states_results(tmp_path, state, f"promise-eval[model={m}]", plain)
            errors.append(sum("error" in r for r in mine))
    beyond = any(n > (max_count or 0) for n in errors)
    assert result.code == (3 if beyond else 0), (errors, max_count, result.err)


def _rows(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _pause_past_the_lease(env: dict[str, str], call: str) -> None:
    """Runner A stops itself (SIGSTOP) right before `call` on the service; once its 2 s lease has
    run out, runner B takes over and runs to the end; then A resumes (SIGCONT). If A never made
    that call, it simply runs to its end."""
    short = {**env, "BATCHFLOW_LOCK_TTL": "2s"}
    a = subprocess.Popen(
        [sys.executable, "-m", "batchflow", "apply", "--wait"],
        env={**short, "BATCHFLOW_TEST_STALL_BEFORE": call},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while a.poll() is None and not stopped(a.pid):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    if a.returncode is None:
        b = subprocess.run(
            [sys.executable, "-m", "batchflow", "apply", "--wait", "--lock-timeout", "60s"],
            env=short,
            capture_output=True,
            timeout=120,
        )
        assert b.returncode in (0, 3), b.stderr
        a.send_signal(signal.SIGCONT)
    assert a.wait(timeout=60) in (0, 1, 3)


def _assert_rows_are_the_states_results(tmp_path, state_dir: str, name: str, rows: list[dict]) -> None:
    (pipeline,) = [
        p for p in batchflow.load([tmp_path / "pipelines"], state=state_dir).pipelines if p.name == name
    ]
    store = LocalStore(state_dir)
    state = store.load(name)
    failed = {s.id: s for s in state.shards.values() if s.status == "failed"}
    reader = ResultReader(lambda shard: store.result_path(name, shard))
    with contextlib.closing(store.index(name, readonly=True)) as index, contextlib.closing(reader):
        for rendered, row in zip(Renderer(pipeline).render(records(pipeline)), rows, strict=True):
            found = index.results([rendered.hash])
            if rendered.hash in found:
                expected = result_fields(reader.get(*found[rendered.hash]), pipeline.spec)
                assert {k: v for k, v in row.items() if k != "key"} == expected
            else:  # never answered: its job failed for good, and the row says which job and why
                (shard,) = index.shards_of([rendered.hash], set(failed)).values()
                assert failed[shard].job_name in row["error"]["message"]
