"""The Flex tier: requests as generateContent calls, each answer saved as it arrives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx2 as httpx
from conftest import TEST_SPEED, write

SPEC = """
    version: 1
    name: quick
    model: gemini-3.8-flash
    TIER
    source: {uri: data.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ id }}"}
    output: {uri: OUT}
"""


def _pipeline(tmp_path, tier: str, out: str, n: int = 20, name: str = "quick.yaml") -> None:
    write(tmp_path / "pipelines" / name, SPEC.replace("TIER", tier).replace("OUT", out))
    write(tmp_path / "pipelines/data.jsonl", "".join(json.dumps({"id": i}) + "\n" for i in range(n)))


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_flex_answers_every_request_through_shed_calls_as_batch_would(
    cli, client, emulator, emulator_env, tmp_path
):
    httpx.post(f"{emulator.url}/_emulator/faults", json={"flex_shed_rate": 0.2}).raise_for_status()
    _pipeline(tmp_path, "tier: flex\n    flex: {concurrency: 4}", "flex.jsonl")
    planned = cli("plan")
    assert planned.code == 0 and "bytes, on the flex tier, each answer saved as it comes" in planned.out
    done = cli("apply")  # no --wait needed: the calls are answered in the run
    assert done.code == 0, done.err
    assert "20 answered on the flex tier" in done.out and "quick: done" in done.out
    assert list(client.batches.list()) == []  # no job: calls
    assert emulator.store.flex_shed > 0 and emulator.store.flex_calls == 20 + emulator.store.flex_shed
    assert "No changes" in cli("plan").out and cli("apply").code == 0
    assert emulator.store.flex_calls == 20 + emulator.store.flex_shed  # nothing sent again
    # The same spec on batch answers with the same rows.
    _pipeline(tmp_path, "tier: batch", "batch.jsonl")
    assert cli("apply", "--wait", env={"BATCHFLOW_STATE": str(tmp_path / "batch-state")}).code == 0
    on_flex = _rows(tmp_path / "pipelines/flex.jsonl")
    assert {r.pop("tier") for r in on_flex} == {"flex"}  # as the service's header said
    assert on_flex == _rows(tmp_path / "pipelines/batch.jsonl")


def test_a_killed_flex_apply_resends_only_what_had_no_answer(cli, emulator, emulator_env, tmp_path):
    _pipeline(tmp_path, "tier: flex\n    flex: {concurrency: 2}", "flex.jsonl", n=40)
    emulator.store.clock.set_speed(60)  # about 1.5 s a call: the kill lands mid-way
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchflow", "apply"],
        env={**os.environ, **emulator_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = tmp_path / "state/quick/results"
    deadline = time.monotonic() + 60
    while not any(len(p.read_bytes().splitlines()) >= 4 for p in results.glob("*.part")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (part,) = results.glob("*.part")
    kept = part.read_bytes().count(b"\n")  # whole lines: a line the kill cut is no answer
    calls = emulator.store.flex_calls
    assert f"flex calls: {kept} of 40 answered; apply sends the rest" in cli("status").out
    emulator.store.clock.set_speed(TEST_SPEED)
    done = cli("apply")
    assert done.code == 0, done.err
    assert [r["key"] for r in _rows(tmp_path / "pipelines/flex.jsonl")] == [str(i) for i in range(40)]
    sent_again = emulator.store.flex_calls - calls
    assert sent_again == 40 - kept  # only what had no answer saved
    assert calls - kept <= 2  # at most the calls in flight were lost


def test_validate_refuses_flex_for_embeddings(cli, tmp_path):
    write(
        tmp_path / "pipelines/emb.yaml",
        """
        version: 1
        name: emb
        model: gemini-embedding-2
        tier: flex
        source: {uri: data.jsonl, key: "{{ id }}"}
        embed: {content: "{{ id }}"}
        output: {uri: out.jsonl}
        """,
    )
    write(tmp_path / "pipelines/data.jsonl", '{"id": 1}\n')
    refused = cli("validate")
    assert refused.code == 1 and "tier: flex sends generateContent calls" in refused.err


def test_auto_sends_small_work_on_flex_and_large_work_by_batch(cli, client, emulator_env, tmp_path):
    _pipeline(tmp_path, "tier: auto\n    flex: {auto_below: 25}", "auto.jsonl")
    planned = cli("plan")
    assert "on the flex tier, each answer saved" in planned.out
    assert "; auto: 20 new requests, under flex.auto_below (25)" in planned.out
    assert cli("apply").code == 0 and list(client.batches.list()) == []
    _pipeline(tmp_path, "tier: auto\n    flex: {auto_below: 25}", "auto.jsonl", n=60)
    planned = cli("plan")
    assert "auto: batch for 40 new requests (flex.auto_below: 25)" in planned.out
    assert cli("apply", "--wait").code == 0 and len(list(client.batches.list())) == 1
    assert len(_rows(tmp_path / "pipelines/auto.jsonl")) == 60


def test_standard_and_priority_are_calls_at_their_prices(cli, client, emulator_env, tmp_path):
    def estimate(tier: str) -> dict:
        _pipeline(tmp_path, f"tier: {tier}", "urgent.jsonl")
        planned = cli("plan", "--json")
        assert planned.code == 0, planned.err
        return json.loads(planned.out)["pipelines"][0]["estimate"]

    batch, flex, standard, priority = (estimate(t) for t in ("batch", "flex", "standard", "priority"))
    assert flex["usd"] == batch["usd"] and flex["tier"] == "flex"
    assert standard["usd"] == 2 * batch["usd"] and priority["usd"] == 4 * batch["usd"]
    assert "at Priority prices" in cli("plan").out
    assert cli("apply").code == 0 and list(client.batches.list()) == []
    assert {r["tier"] for r in _rows(tmp_path / "pipelines/urgent.jsonl")} == {"priority"}


def test_a_budget_refuses_before_the_first_call_and_errors_are_sent_again_on_flex(
    cli, emulator, emulator_env, tmp_path
):
    _pipeline(tmp_path, "tier: flex", "flex.jsonl")
    refused = cli("apply", "--max-usd", "0.000001")
    assert refused.code == 1 and "over the budget" in refused.err and emulator.store.flex_calls == 0
    httpx.post(
        f"{emulator.url}/_emulator/faults", json={"prompt_block_rate": 0.5, "seed": 3}
    ).raise_for_status()
    blocked = cli("apply")
    rows = _rows(tmp_path / "pipelines/flex.jsonl")
    errors = [r["key"] for r in rows if "error" in r]
    assert blocked.code == 3 and errors and len(rows) == 20  # blocked prompts are error rows
    httpx.post(f"{emulator.url}/_emulator/faults", json={"prompt_block_rate": 0}).raise_for_status()
    calls = emulator.store.flex_calls
    again = cli("apply", "--retry-errors")
    assert again.code == 0, again.err
    assert emulator.store.flex_calls - calls == len(errors)  # only the errors were sent again
    assert not [r for r in _rows(tmp_path / "pipelines/flex.jsonl") if "error" in r]


def test_the_project_file_sets_the_tier_of_specs_that_name_none(cli, emulator_env, tmp_path):
    write(tmp_path / "batchflow.yaml", "version: 1\ntier: flex\n")
    _pipeline(tmp_path, "", "default.jsonl")
    write(
        tmp_path / "pipelines/own.yaml",
        SPEC.replace("TIER", "tier: batch").replace("name: quick", "name: own").replace("OUT", "own.jsonl"),
    )
    planned = cli("plan")
    assert planned.code == 0, planned.err
    own, quick = planned.out.split("quick:")  # own.yaml comes first
    assert "on the flex tier" in quick and "on the flex tier" not in own


def test_each_tier_has_its_own_rate_limit_and_flex_rides_it_out(cli, emulator, emulator_env, tmp_path):
    httpx.post(f"{emulator.url}/_emulator/faults", json={"flex_rpm": 2}).raise_for_status()
    emulator.store.clock.set_speed(600)  # two flex calls every 0.1 s, and three at once ask
    _pipeline(tmp_path, "tier: flex\n    flex: {concurrency: 3}", "flex.jsonl", n=6)
    done = cli("apply")
    assert done.code == 0, done.err
    assert emulator.store.tier_limited > 0 and len(_rows(tmp_path / "pipelines/flex.jsonl")) == 6
    _pipeline(tmp_path, "tier: standard", "standard.jsonl", n=6)  # standard has no limit here
    limited = emulator.store.tier_limited
    assert cli("apply").code == 0 and emulator.store.tier_limited == limited


def test_a_flex_runner_paused_past_its_lease_sends_nothing_more(cli, emulator, emulator_env, tmp_path):
    _pipeline(tmp_path, "tier: flex\n    flex: {concurrency: 2}", "flex.jsonl", n=30)
    emulator.store.clock.set_speed(60)  # about 1.5 s a call
    env = {**os.environ, **emulator_env, "BATCHFLOW_LOCK_TTL": "2s"}
    a = subprocess.Popen([sys.executable, "-m", "batchflow", "apply"], env=env, stderr=subprocess.PIPE)
    results = tmp_path / "state/quick/results"
    deadline = time.monotonic() + 60
    while not any(p.read_bytes().count(b"\n") >= 2 for p in results.glob("*.part")):
        assert time.monotonic() < deadline and a.poll() is None
        time.sleep(0.05)
    a.send_signal(signal.SIGSTOP)  # a VM paused mid-way: its heartbeat stops too
    time.sleep(3)  # past its 2 s lease
    emulator.store.clock.set_speed(TEST_SPEED)
    taken = subprocess.run(
        [sys.executable, "-m", "batchflow", "apply", "--lock-timeout", "30s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert taken.returncode == 0, taken.stderr
    calls = emulator.store.flex_calls
    a.send_signal(signal.SIGCONT)
    _, err = a.communicate(timeout=60)
    assert a.returncode == 1 and b"lease" in err  # it stops at its next confirmation
    assert emulator.store.flex_calls - calls <= 2  # at most its calls in flight went out after
    assert [r["key"] for r in _rows(tmp_path / "pipelines/flex.jsonl")] == [str(i) for i in range(30)]
    (result,) = results.glob("*.jsonl")  # the paused runner wrote nothing into it after
    assert result.read_bytes().count(b"\n") == 30
