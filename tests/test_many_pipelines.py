"""Many pipelines in one run: a broken one is reported and the others go on; --target picks some."""

from __future__ import annotations

import json

from conftest import write

SPEC = """
    version: 1
    name: NAME
    model: gemini-2.5-flash
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
