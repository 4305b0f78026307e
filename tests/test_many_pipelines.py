"""Many pipelines in one run: a broken one is reported and the others go on; --target picks some."""

from __future__ import annotations

import json

from conftest import write

SPEC = """
    version: 1
    name: NAME
    model: gemini-3.8-flash
    source: {uri: data/NAME.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ word }}"}
    output: {uri: out/NAME.jsonl}
"""


def _pipeline(tmp_path, name: str, rows: list[dict] | None = None, extra: str = "") -> None:
    write(tmp_path / f"pipelines/{name}.yaml", SPEC.replace("NAME", name) + extra)
    rows = rows if rows is not None else [{"id": i, "word": f"w{i}"} for i in range(2)]
    write(tmp_path / f"pipelines/data/{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def test_a_broken_pipeline_does_not_stop_the_others(cli, emulator_env, tmp_path):
    _pipeline(tmp_path, "good-one")
    _pipeline(tmp_path, "bad-data", rows=[{"id": 1, "word": "a"}, {"id": 2}])  # record 2 has no word
    _pipeline(tmp_path, "bad-spec", extra="    retries: 3\n")  # a misspelt field
    _pipeline(tmp_path, "good-two")
    for command in (["plan"], ["apply", "--wait"]):
        result = cli(*command)
        assert result.code == 1, result.out
        lines = result.err.strip().splitlines()
        assert len(lines) == 2, result.err
        assert "pipelines/bad-spec.yaml:7:1: retries: unknown field 'retries'" in lines[0]
        assert lines[1].startswith("bad-data: error: ") and "'word' is undefined" in lines[1]
        assert lines[1].endswith("(pipelines/bad-data.yaml)")
    assert "good-one: done" in result.out and "good-two: done" in result.out
    for name in ("good-one", "good-two"):
        assert len((tmp_path / f"pipelines/out/{name}.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "pipelines/out/bad-data.jsonl").exists()


def test_target_applies_only_the_named_pipelines(cli, emulator_env, tmp_path):
    for name in ("one", "two", "three"):
        _pipeline(tmp_path, name)
    result = cli("apply", "--wait", "--target", "one", "-t", "three")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "pipelines/out").iterdir()) == ["one.jsonl", "three.jsonl"]
    plan = cli("plan", "--target", "two")
    assert "two:" in plan.out and "one" not in plan.out
    unknown = cli("plan", "--target", "fuor")
    assert unknown.code == 1 and "--target fuor: no such pipeline (found: one, three, two)" in unknown.err


def test_max_concurrent_jobs_caps_the_jobs_at_work(cli, client, emulator, emulator_env, tmp_path):
    _pipeline(tmp_path, "capped", rows=[{"id": i, "word": f"w{i}"} for i in range(6)])
    spec = tmp_path / "pipelines/capped.yaml"
    spec.write_text(spec.read_text() + "batch: {max_requests: 1, max_concurrent_jobs: 2}\n")
    emulator.store.clock.set_speed(1)  # jobs stay at work while we look
    planned = cli("plan")  # what apply does now: two of six start, four wait for a slot
    assert planned.out.count("waits for a job slot") == 4 and planned.out.count("+ submit") == 6
    first = cli("apply")
    assert first.code == 0 and "waiting for a job slot" not in first.err
    assert len(list(client.batches.list())) == 2
    held = cli("plan")
    assert held.out.count("= hold shard") == 4 and "Plan: 2 to poll, 4 to hold." in held.out
    assert len(list(client.batches.list())) == 2 and cli("apply").code == 0  # still two at work
    assert len(list(client.batches.list())) == 2
    emulator.store.clock.set_speed(3600)
    assert cli("apply", "--wait").code == 0
    jobs = list(client.batches.list())
    assert len(jobs) == 6 and len({j.display_name for j in jobs}) == 6
    # At no moment were more than two at work: each began after an earlier one ended.
    spans = sorted((j.create_time, j.end_time) for j in jobs)
    for start, _ in spans:
        assert sum(s <= start < e for s, e in spans) <= 2
    assert len((tmp_path / "pipelines/out/capped.jsonl").read_text().splitlines()) == 6
    assert cli("apply", "--max-concurrent-jobs", "0").code == 2  # a usage error, as click reports it
