"""A source that changes between runs: rows inserted, the source emptied or cut short, copies."""

from __future__ import annotations

import json

from conftest import write

from batchflow.state.store import LocalStore

SPEC = """
    version: 1
    name: changes
    model: gemini-3.8-flash
    source: {uri: data/q.jsonl}
    request: {prompt: "Answer {{ q }}"}
    output: {uri: out.jsonl}
"""


def _source(tmp_path, values) -> None:
    write(tmp_path / "pipelines/data/q.jsonl", "".join(json.dumps({"q": v}) + "\n" for v in values))


def _rows(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]


def test_inserting_a_record_sends_only_that_record(cli, client, emulator_env, tmp_path):
    write(tmp_path / "pipelines/changes.yaml", SPEC)  # no source.key: the default key
    _source(tmp_path, ["a", "b", "c"])
    assert cli("apply", "--wait").code == 0
    before = {r["key"]: r["text"] for r in _rows(tmp_path)}
    _source(tmp_path, ["a", "new", "b", "c"])
    plan = cli("plan")
    assert "submit 1 new request (" in plan.out, plan.out
    assert cli("apply", "--wait").code == 0
    rows = _rows(tmp_path)
    assert len(rows) == 4 and "new" in rows[1]["text"]
    assert {r["key"]: r["text"] for r in rows if r["key"] in before} == before
    state = LocalStore(emulator_env["BATCHFLOW_STATE"]).load("changes")
    assert sorted(s.requests for s in state.shards.values()) == [1, 3]
    assert len(list(client.batches.list())) == 2


def test_exact_copies_without_a_key_are_an_error_naming_both_lines(cli, emulator_env, tmp_path):
    write(tmp_path / "pipelines/changes.yaml", SPEC)
    _source(tmp_path, ["a", "b", "a"])
    result = cli("plan")
    assert result.code == 1
    assert (
        result.err.startswith("changes: error: ")
        and (
            "data/q.jsonl:3: this record is an exact copy of the one at line 1; remove it, or set source.key"
        )
        in result.err
    )


def test_an_empty_source_is_an_error_and_keeps_the_output(cli, emulator_env, tmp_path):
    write(tmp_path / "pipelines/changes.yaml", SPEC)
    _source(tmp_path, ["a", "b"])
    assert cli("apply", "--wait").code == 0
    before = (tmp_path / "pipelines/out.jsonl").read_bytes()
    _source(tmp_path, [])
    for command in ("plan", "apply"):
        result = cli(command)
        assert result.code == 1 and "the source has no records" in result.err, result.err
    assert (tmp_path / "pipelines/out.jsonl").read_bytes() == before


def test_a_source_cut_short_needs_allow_shrink(cli, emulator_env, tmp_path):
    write(tmp_path / "pipelines/changes.yaml", SPEC)
    _source(tmp_path, [str(i) for i in range(20)])
    assert cli("apply", "--wait").code == 0
    before = (tmp_path / "pipelines/out.jsonl").read_bytes()
    _source(tmp_path, [str(i) for i in range(19)])  # one of 20 gone: within output.max_shrink 0.1
    assert cli("plan", "--detailed-exitcode").code == 2
    _source(tmp_path, [str(i) for i in range(5)])
    for command in ("plan", "apply"):
        result = cli(command)
        assert result.code == 1
        assert "the source has 5 records, 15 fewer than the 20 of the last output" in result.err
        assert "--allow-shrink" in result.err
    assert (tmp_path / "pipelines/out.jsonl").read_bytes() == before
    assert cli("apply", "--allow-shrink").code == 0
    assert len(_rows(tmp_path)) == 5
