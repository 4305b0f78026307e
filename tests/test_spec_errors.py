"""Bad specs get one line each: file:line:column: field: message, exit 1, no traceback."""

from __future__ import annotations

import pytest
from conftest import write

GOOD = """
version: 1
name: good
model: gemini-2.5-flash
source:
  uri: data.jsonl
request:
  prompt: "Hello {{ name }}"
output:
  uri: out.jsonl
"""

CASES = {
    "unknown field with suggestion": (
        GOOD.replace("  prompt:", "  promt:"),
        7,
        "request.promt",
        "did you mean 'prompt'",
    ),
    "missing required field": (
        GOOD.replace("model: gemini-2.5-flash\n", ""),
        None,
        "model",
        "required field is missing",
    ),
    "wrong type": (GOOD.replace("version: 1", "version: one"), 1, "version", "Input should be 1"),
    "invalid name": (
        GOOD.replace("name: good", "name: Bad_Name"),
        2,
        "name",
        "should match pattern",
    ),
    "invalid yaml": (GOOD.replace("  prompt:", "  prompt: [unclosed"), None, None, "invalid YAML"),
    "tab indentation": (
        GOOD.replace("  uri: data.jsonl", "\turi: data.jsonl"),
        5,
        None,
        "tab character",
    ),
    "unset environment variable": (
        GOOD.replace("data.jsonl", "${NO_SUCH_VAR_XYZ}/data.jsonl"),
        5,
        "source.uri",
        "NO_SUCH_VAR_XYZ",
    ),
    "negative count": (
        GOOD + "batch:\n  max_requests: -1\n",
        11,
        "batch.max_requests",
        "greater than or equal",
    ),
    "not a mapping": ("- just\n- a list\n", 1, None, "must be a mapping"),
    "schema $ref missing": (
        GOOD.replace(
            '  prompt: "Hello {{ name }}"',
            "  prompt: hi\n  generation_config:\n    response_schema: {$ref: nope.json}",
        ),
        9,
        "request.generation_config.response_schema.$ref",
        "not found",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_spec(case, cli, tmp_path):
    text, line, field, message = CASES[case]
    path = write(tmp_path / "p.yaml", text)
    result = cli("validate", str(path))
    assert result.code == 1
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert all(line.startswith(str(path)) for line in lines), lines
    first = next((line for line in lines if message in line), lines[0])
    if line is not None:
        assert first.startswith(f"{path}:{line}:"), first
    if field is not None:
        assert f" {field}:" in first, first
    assert message in first, first


def test_empty_file(cli, tmp_path):
    path = write(tmp_path / "p.yaml", "# nothing here\n")
    result = cli("validate", str(path))
    assert result.code == 1 and "empty" in result.err


def test_duplicate_pipeline_names_name_both_files(cli, tmp_path):
    a = write(tmp_path / "specs/a.yaml", GOOD)
    b = write(tmp_path / "specs/b.yaml", GOOD)
    result = cli("validate", str(tmp_path / "specs"))
    assert result.code == 1
    assert str(a) in result.err and str(b) in result.err


def test_all_problems_are_reported_at_once(cli, tmp_path):
    path = write(
        tmp_path / "p.yaml",
        GOOD.replace("  prompt:", "  promt:").replace("version: 1", "version: 7"),
    )
    lines = cli("validate", str(path)).err.strip().splitlines()
    assert len(lines) >= 2


def test_env_default_is_used(cli, tmp_path):
    path = write(tmp_path / "p.yaml", GOOD.replace("data.jsonl", "${NO_SUCH_VAR_XYZ:-data.jsonl}"))
    assert cli("validate", str(path)).code == 0


def test_template_syntax_error(cli, tmp_path):
    path = write(tmp_path / "p.yaml", GOOD.replace("{{ name }}", "{{ name "))
    result = cli("validate", str(path))
    assert result.code == 1 and "request.prompt" in result.err and "template" in result.err


def test_missing_path(cli, tmp_path):
    result = cli("validate", str(tmp_path / "nope.yaml"))
    assert result.code == 1 and "no such file" in result.err


def test_example_pipelines_are_valid(cli):
    from pathlib import Path

    examples = Path(__file__).resolve().parent.parent / "pipelines"
    result = cli("validate", str(examples))
    assert result.code == 0, result.err


def test_committed_schema_is_current():
    from pathlib import Path

    from batchflow.cli import schema_text

    committed = Path(__file__).resolve().parent.parent / "schemas/pipeline.schema.json"
    assert committed.read_text() == schema_text(), "run `make schema` and commit the result"
