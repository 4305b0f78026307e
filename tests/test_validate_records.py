"""`validate` renders every record of a local source (under a size limit), as apply would."""

from __future__ import annotations

import json

from conftest import write

SPEC = """
    version: 1
    name: checked
    model: gemini-3.8-flash
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


def test_a_prompt_over_the_models_input_limit_is_refused_before_anything_is_sent(
    cli, client, emulator, emulator_env, tmp_path
):
    """A 5 MB field (~1.3M tokens) used to pass validate and plan and fail after submit."""
    write(tmp_path / "pipelines/checked.yaml", SPEC)
    _source(tmp_path, [{"id": 1, "topic": "a"}, {"id": 2, "topic": "x" * 5_200_000}, {"id": 3, "topic": "c"}])
    refusal = (
        "pipelines/data/in.jsonl:2: record '2': request: ~1,300,008 input tokens, over the 1,048,576 "
        "that gemini-3.8-flash takes: the service would refuse it"
    )
    validated = cli("validate")
    assert validated.code == 1 and validated.err.strip() == refusal
    planned = cli("plan")
    assert planned.code == 1 and refusal in planned.err
    applied = cli("apply")
    assert applied.code == 1 and refusal in applied.err
    assert list(client.files.list()) == [] and list(client.batches.list()) == []
    # The emulator refuses the same request in the service's words: a dry run fails as production would.
    from google.genai import errors

    try:
        client.models.generate_content(model="gemini-3.8-flash", contents="Tell me about " + "x" * 5_200_000)
    except errors.ClientError as exc:
        assert exc.code == 400 and "exceeds the maximum number of tokens allowed (1048576)" in exc.message
    else:
        raise AssertionError("the emulator took a prompt over the input limit")


def test_a_record_naming_a_file_the_service_refuses_fails_validate(cli, tmp_path):
    write(
        tmp_path / "pipelines/checked.yaml",
        SPEC.replace(
            'request: {prompt: "Tell me about {{ topic }}"}', 'request: {prompt: "Sum", files: ["{{ f }}"]}'
        ),
    )
    write(tmp_path / "pipelines/data/report.docx", "PK")
    write(tmp_path / "pipelines/data/chart.png", "png")
    _source(tmp_path, [{"id": 1, "f": "data/chart.png"}, {"id": 2, "f": "data/report.docx"}])
    result = cli("validate")
    assert result.code == 1
    line = result.err.strip()
    assert line.startswith("pipelines/data/in.jsonl:2: record '2': request.files[0]: "), line
    assert line.endswith(
        "report.docx: the service would refuse this file: Unsupported MIME type: "
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    ), line
