"""`validate` renders every record of a local source (under a size limit), as apply would."""

from __future__ import annotations

import json

from conftest import write

SPEC = """
    version: 1
    name: checked
    model: gemini-2.5-flash
    source: {uri: data/in.jsonl, key: "{{ id }}"}
    request: {prompt: "Tell me about {{ topic }}"}
    output: {uri: out.jsonl}
"""


def _source(tmp_path, rows) -> None:
    write(tmp_path / "pipelines/data/in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def test_a_duplicate_key_in_a_small_file_fails_validate(cli, tmp_path):
    write(tmp_path / "pipelines/checked.yaml", SPEC)
    _source(tmp_path, [{"id": 1, "topic": "a"}, {"id": 2, "topic": "b"}, {"id": 1, "topic": "c"}])
    result = cli("validate")
    assert result.code == 1
    assert result.err.strip() == (
        "pipelines/data/in.jsonl:3: duplicate key '1', also at line 1 (source.key must be unique)"
    )


def test_a_field_missing_from_record_251_fails_validate(cli, tmp_path):
    write(tmp_path / "pipelines/checked.yaml", SPEC)
    rows = [{"id": i, "topic": f"t{i}"} for i in range(1, 400)]
    del rows[250]["topic"]
    _source(tmp_path, rows)
    result = cli("validate")
    assert result.code == 1
    assert result.err.strip() == (
        "pipelines/data/in.jsonl:251: record '251': request.prompt: 'topic' is undefined"
    )
    as_json = json.loads(cli("validate", "--json").out)
    assert as_json["problems"][0]["line"] == 251


def test_validate_says_how_many_records_it_checked(cli, tmp_path):
    write(tmp_path / "pipelines/checked.yaml", SPEC)
    _source(tmp_path, [{"id": i, "topic": f"t{i}"} for i in range(12_000)])
    result = cli("validate")
    assert result.code == 0 and "(all 12,000 records rendered)" in result.out
    result = cli("validate", env={"BATCHFLOW_VALIDATE_MAX_BYTES": "100KB"})
    assert result.code == 0 and "the first 10,000 records rendered" in result.out
    assert "BATCHFLOW_VALIDATE_MAX_BYTES" in result.out
