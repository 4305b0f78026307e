"""The service's limits: the enqueued-token quota (429 on create) and jobs left pending."""

from __future__ import annotations

import json
import time

from conftest import write

SPEC = """
    version: 1
    name: NAME
    model: gemini-3.8-flash
    source: {uri: data/NAME.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ word }}"}
    output: {uri: out/NAME.jsonl}
"""


def _pipeline(tmp_path, name: str, rows: int, extra: str) -> None:
    write(tmp_path / f"pipelines/{name}.yaml", SPEC.replace("NAME", name) + extra)
    lines = "".join(json.dumps({"id": i, "word": f"w{i}"}) + "\n" for i in range(rows))
    write(tmp_path / f"pipelines/data/{name}.jsonl", lines)


def test_quota_429s_leave_shards_waiting_and_every_shard_gets_one_job(
    cli, client, emulator, emulator_env, tmp_path
):
    _pipeline(tmp_path, "quota", 20, "    batch: {max_requests: 1, max_concurrent_jobs: 3}\n")
    # Each one-request job holds about 30 tokens: the quota admits two at a time, not three.
    emulator.store.faults.update({"enqueued_tokens": 70})
    emulator.store.clock.set_speed(1)  # jobs stay at work while we look
    first = cli("apply")
    assert first.code == 0, first.err
    assert "waiting for quota (429 RESOURCE_EXHAUSTED on create)" in first.out
    assert len(list(client.batches.list())) == 2
    status = cli("status")
    assert "1 shard(s) waiting for quota" in status.out
    emulator.store.clock.set_speed(3600)
    done = cli("apply", "--wait")
    assert done.code == 0, done.err
    jobs = list(client.batches.list())
    assert len(jobs) == 20 and len({j.display_name for j in jobs}) == 20  # one job per shard
    spans = sorted((j.create_time, j.end_time) for j in jobs)
    for start, _ in spans:
        assert sum(s <= start < e for s, e in spans) <= 3
    assert len((tmp_path / "pipelines/out/quota.jsonl").read_text().splitlines()) == 20
    assert "waiting for quota" not in cli("status").out


def test_a_job_left_pending_is_cancelled_and_its_requests_sent_again(
    cli, client, emulator, emulator_env, tmp_path
):
    _pipeline(tmp_path, "stuck", 3, "    batch: {pending_timeout: 2s}\n")
    # Under seed 5 the first job stays pending for ever; the ones after it run.
    emulator.store.faults.update({"stay_pending_rate": 0.5, "seed": 5})
    started = time.monotonic()
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert time.monotonic() - started >= 1  # the state keeps times to the second
    assert "still pending after batch.pending_timeout (2 s); its requests will be sent again" in result.out
    states = sorted(j.state.name for j in client.batches.list())
    assert states == ["JOB_STATE_CANCELLED", "JOB_STATE_SUCCEEDED"]
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out/stuck.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["0", "1", "2"] and all("error" not in r for r in rows)
    assert cli("apply").out.strip() == "stuck: up to date, nothing to do"
