"""The bad-input catalogue: each bad spec gets one line naming file:line:column, field and problem.

Exit code 1, no traceback, every problem of a file reported at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write

GOOD = """\
version: 1
name: good
model: gemini-3.8-flash
source:
  uri: data.jsonl
  key: "{{ id }}"
request:
  prompt: "Hello {{ name }}"
output:
  uri: out.jsonl
"""
EMBED = (
    GOOD.replace("model: gemini-3.8-flash", "model: gemini-embedding-001").replace(
        'request:\n  prompt: "Hello {{ name }}"\n', ""
    )
    + 'embed:\n  content: "{{ name }}"\n'
)


def sub(old: str, new: str, base: str = GOOD) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def gen(extra: str) -> str:
    return sub(
        '  prompt: "Hello {{ name }}"\n', '  prompt: "Hello {{ name }}"\n  generation_config:\n' + extra
    )


# name: (spec text, a text marking the expected line or None, field or None, message fragment)
CASES = {
    "invalid yaml": (sub('  prompt: "Hello {{ name }}"', "  prompt: [unclosed"), None, None, "invalid YAML"),
    "tab indentation": (sub("  uri: data.jsonl", "\turi: data.jsonl"), "\turi", None, "tab character"),
    "not a mapping": ("- just\n- a list\n", "- just", None, "must be a mapping"),
    "unknown top-level field": (sub("model:", "modle:"), "modle:", "modle", "did you mean 'model'"),
    "unknown nested field": (sub("  prompt:", "  promt:"), "promt", "request.promt", "did you mean 'prompt'"),
    "unknown field without a near match": (GOOD + "zzz: 1\n", "zzz", "zzz", "allowed: version, name"),
    "missing model": (sub("model: gemini-3.8-flash\n", ""), None, "model", "required field is missing"),
    "missing source": (
        sub('source:\n  uri: data.jsonl\n  key: "{{ id }}"\n', ""),
        None,
        "source",
        "required field is missing",
    ),
    "missing output uri": (
        sub("output:\n  uri: out.jsonl\n", "output: {}\n"),
        "output:",
        "output.uri",
        "required field is missing",
    ),
    "version not a number": (sub("version: 1", "version: one"), "version", "version", "not allowed"),
    "unknown version": (sub("version: 1", "version: 2"), "version", "version", "expected one of: 1"),
    "name with invalid characters": (
        sub("name: good", "name: Bad_Name"),
        "name:",
        "name",
        "lowercase letters",
    ),
    "name too long": (sub("name: good", "name: " + "a" * 70), "name:", "name", "at most 63"),
    "model name with spaces": (
        sub("model: gemini-3.8-flash", "model: Gemini Pro"),
        "model:",
        "model",
        "model name such as",
    ),
    "negative max_requests": (
        GOOD + "batch:\n  max_requests: -1\n",
        "max_requests",
        "batch.max_requests",
        "greater than or equal to 1",
    ),
    "max_requests not a number": (
        GOOD + "batch:\n  max_requests: lots\n",
        "max_requests",
        "batch.max_requests",
        "valid integer",
    ),
    "max_bytes over 2 GB": (
        GOOD + "batch:\n  max_bytes: 3GB\n",
        "max_bytes",
        "batch.max_bytes",
        "less than or equal to 2147483648",
    ),
    "bad size": (GOOD + "batch:\n  max_bytes: 12 parsecs\n", "max_bytes", "batch.max_bytes", "invalid size"),
    "zero retry attempts": (
        GOOD + "retry:\n  attempts: 0\n",
        "attempts",
        "retry.attempts",
        "greater than or equal to 1",
    ),
    "cache ttl too short": (
        GOOD + "cache:\n  contents: [a long text]\n  ttl: 5m\n",
        "ttl",
        "cache.ttl",
        "greater than or equal to 600",
    ),
    "bad duration": (
        GOOD + "cache:\n  contents: [text]\n  ttl: soon\n",
        "ttl",
        "cache.ttl",
        "invalid duration",
    ),
    "misspelled source format": (
        sub("  uri: data.jsonl\n", "  uri: data.jsonl\n  format: jsonll\n"),
        "format",
        "source.format",
        "did you mean 'jsonl'",
    ),
    "unsupported output format": (
        sub("  uri: out.jsonl", "  uri: out.jsonl\n  format: xlsx"),
        "xlsx",
        "output.format",
        "not allowed",
    ),
    "output extension unknown": (
        sub("uri: out.jsonl", "uri: out.txt"),
        "out.txt",
        "output.uri",
        "cannot tell the format",
    ),
    "source extension unknown": (
        sub("uri: data.jsonl", "uri: data.xyz"),
        "data.xyz",
        "source.uri",
        "cannot tell the format",
    ),
    "unsupported URL scheme": (
        sub("uri: data.jsonl", "uri: ftp://host/data.jsonl"),
        "ftp://",
        "source.uri",
        "unsupported URL scheme ftp://",
    ),
    "http output": (
        sub("uri: out.jsonl", "uri: https://example.com/out.jsonl"),
        "https://",
        "output.uri",
        "unsupported URL scheme",
    ),
    "unset environment variable": (
        sub("uri: data.jsonl", "uri: ${NO_SUCH_VAR_XYZ}/data.jsonl"),
        "NO_SUCH_VAR",
        "source.uri",
        "${NO_SUCH_VAR_XYZ} is not set",
    ),
    "template syntax error": (sub("{{ name }}", "{{ name "), "prompt", "request.prompt", "template error"),
    "template syntax error in a block": (
        sub('  prompt: "Hello {{ name }}"', "  prompt: |\n    Hello\n    {% if %}\n    there"),
        "{% if %}",
        "request.prompt",
        "template error",
    ),
    "template field missing": (
        sub("{{ name }}", "{{ nmae }}"),
        "prompt",
        "request.prompt",
        "field 'nmae' is not in the source data.jsonl; did you mean 'name'",
    ),
    "key template field missing": (sub("{{ id }}", "{{ sku }}"), "key:", "source.key", "'sku' is not in"),
    "output column missing": (
        sub("  uri: out.jsonl", "  uri: out.jsonl\n  columns: [name, price]"),
        "columns",
        "output.columns[1]",
        "'price' is not in",
    ),
    "response_schema with a bad type": (
        gen(
            "    response_mime_type: application/json\n"
            "    response_schema: {type: OBJECT, properties: {a: {type: STRNG}}}\n"
        ),
        "response_schema",
        "request.generation_config.response_schema.properties.a.type",
        "did you mean STRING",
    ),
    "response_json_schema invalid": (
        gen("    response_mime_type: application/json\n    response_json_schema: {type: 5}\n"),
        "response_json_schema",
        "request.generation_config.response_json_schema.type",
        "not a valid JSON Schema",
    ),
    "response schema without JSON mime type": (
        gen("    response_schema: {type: STRING}\n"),
        "generation_config",
        "request.generation_config.response_mime_type",
        "needs response_mime_type",
    ),
    "$ref to a missing file": (
        gen("    response_mime_type: application/json\n    response_schema: {$ref: nope.json}\n"),
        "response_schema",
        "request.generation_config.response_schema.$ref",
        "not found",
    ),
    "$ref to a file that is not JSON": (
        gen("    response_mime_type: application/json\n    response_schema: {$ref: data.jsonl}\n"),
        "response_schema",
        "request.generation_config.response_schema.$ref",
        "not valid JSON",
    ),
    "both request and embed": (GOOD + "embed:\n  content: x\n", "embed:", "embed", "not both"),
    "neither request nor embed": (
        sub('request:\n  prompt: "Hello {{ name }}"\n', ""),
        "version",
        None,
        "set `request`",
    ),
    "embed with a generation model": (
        sub("model: gemini-embedding-001", "model: gemini-3.8-flash", EMBED),
        "model:",
        "model",
        "not an embedding model",
    ),
    "request with an embedding model": (
        sub("model: gemini-3.8-flash", "model: gemini-embedding-001"),
        "model:",
        "model",
        "is an embedding model",
    ),
    "embed dimensionality too large": (
        EMBED + "  output_dimensionality: 5000\n",
        "output_dimensionality",
        "embed.output_dimensionality",
        "less than or equal to 3072",
    ),
    "embed task type misspelled": (
        EMBED + "  task_type: RETRIEVAL_DOC\n",
        "task_type",
        "embed.task_type",
        "did you mean 'RETRIEVAL_DOCUMENT'",
    ),
    "tool misspelled": (
        GOOD + "tools: [google_serch]\n",
        "tools",
        "tools[0]",
        "did you mean 'google_search'",
    ),
    "function with a bad name": (
        GOOD + "tools:\n  - functions:\n      - name: my func\n",
        "my func",
        "tools[0].functions[0].name",
        "should match pattern",
    ),
    "function parameters not a schema": (
        GOOD + "tools:\n  - functions:\n      - name: f\n        parameters: {type: 7}\n",
        "parameters",
        "tools[0].functions[0].parameters",
        "not a valid JSON Schema",
    ),
    "output path equal to source path": (
        sub("uri: out.jsonl", "uri: data.jsonl"),
        10,
        "output.uri",
        "overwrite the source",
    ),
    "errors path equal to output path": (
        GOOD + "errors:\n  uri: out.jsonl\n",
        12,
        "errors.uri",
        "overwrite the output",
    ),
    "duplicate key": (GOOD + "name: again\n", "name: again", "name", "duplicate key"),
    "temperature out of range": (
        gen("    temperature: 3\n"),
        "temperature",
        "request.generation_config.temperature",
        "less than or equal to 2",
    ),
    "thinking budget not a number": (
        gen("    thinking_config: {thinking_budget: high}\n"),
        "thinking",
        "request.generation_config.thinking_config.thinking_budget",
        "valid integer",
    ),
    "mime type not allowed": (
        gen("    response_mime_type: application/xml\n"),
        "response_mime_type",
        "request.generation_config.response_mime_type",
        "not allowed",
    ),
    "safety category misspelled": (
        sub(
            '  prompt: "Hello {{ name }}"\n',
            '  prompt: "Hello {{ name }}"\n'
            "  safety_settings:\n    - {category: HARM_CATEGORY_HATE, "
            "threshold: BLOCK_NONE}\n",
        ),
        "HARM_CATEGORY_HATE",
        "request.safety_settings[0].category",
        "did you mean 'HARM_CATEGORY_HATE_SPEECH'",
    ),
    "csv options on a jsonl source": (
        sub("  uri: data.jsonl\n", "  uri: data.jsonl\n  csv: {delimiter: ';'}\n"),
        "csv:",
        "source.csv",
        "csv options given for a jsonl source",
    ),
    "csv delimiter of two characters": (
        sub("  uri: data.jsonl\n", "  uri: data.csv\n  csv: {delimiter: ';;'}\n"),
        "csv:",
        "source.csv.delimiter",
        "at most 1 character",
    ),
    "cache and a request system instruction": (
        sub("  prompt:", "  system: be brief\n  prompt:") + "cache:\n  contents: [a]\n",
        "system:",
        "request.system",
        "goes in cache.system",
    ),
    "empty cache": (GOOD + "cache:\n  ttl: 2h\n", "cache:", "cache", "needs system, contents or files"),
    "missing local request file": (
        sub('  prompt: "Hello {{ name }}"\n', '  prompt: "Hello {{ name }}"\n  files: [images/cat.png]\n'),
        "files",
        "request.files[0]",
        "file not found: images/cat.png",
    ),
    "source file missing": (
        sub("uri: data.jsonl", "uri: nowhere.jsonl"),
        "nowhere",
        "source.uri",
        "file not found: nowhere.jsonl",
    ),
    "source glob matching nothing": (
        sub("uri: data.jsonl", "uri: parts/*.jsonl"),
        "parts/",
        "source.uri",
        "no file matches parts/*.jsonl",
    ),
    "labels not a mapping": (GOOD + "labels: [a, b]\n", "labels", "labels", "valid dictionary"),
    # What the service refuses after other work was paid for: found before anything is uploaded.
    "max_output_tokens over the model's limit": (
        gen("    max_output_tokens: 100000\n"),
        "max_output_tokens",
        "request.generation_config.max_output_tokens",
        "the service would refuse this: Unable to submit request because it has a maxOutputTokens "
        "value of 100000 but the supported range is from 1 (inclusive) to 65537 (exclusive)",
    ),
    "thinking budget the model refuses": (
        sub(
            "gemini-3.8-flash",
            "gemini-2.5-flash-lite",
            gen("    thinking_config: {thinking_budget: 30000}\n"),
        ),
        "thinking_config",
        "request.generation_config.thinking_config.thinking_budget",
        "the service would refuse this: The thinking budget (30000) is invalid.",
    ),
    "thinking level the model refuses": (
        gen("    thinking_config: {thinking_level: MINIMAL}\n"),
        "thinking_config",
        "request.generation_config.thinking_config.thinking_level",
        "Thinking level MINIMAL is not supported for this model. Supported levels: LOW, MEDIUM, HIGH.",
    ),
    "thinking level on a 2.5 model": (
        sub("gemini-3.8-flash", "gemini-2.5-flash-lite", gen("    thinking_config: {thinking_level: LOW}\n")),
        "thinking_config",
        "request.generation_config.thinking_config.thinking_level",
        "the service would refuse this: Thinking level is not supported for this model.",
    ),
    "thinking level and budget together": (
        gen("    thinking_config: {thinking_level: LOW, thinking_budget: 100}\n"),
        "thinking_config",
        "request.generation_config.thinking_config",
        "set thinking_level or thinking_budget, not both",
    ),
    "a model that was shut down": (
        sub("gemini-3.8-flash", "gemini-2.0-flash"),
        "model:",
        "model",
        "'gemini-2.0-flash' was shut down on 2026-06-01 and answers nothing any more; "
        "use gemini-3.5-flash-lite",
    ),
    "an integer enum in function parameters": (
        GOOD
        + "tools:\n  - functions:\n      - name: rate\n        parameters:\n          type: object\n"
        + "          properties:\n            stars: {type: integer, enum: [1, 2, 3]}\n",
        "enum",
        "tools[0].functions[0].parameters.properties.stars.enum",
        "tools[0].function_declarations[0].parameters.properties[stars].enum: only allowed for STRING type",
    ),
    "an object with no properties in function parameters": (
        GOOD
        + "tools:\n  - functions:\n      - name: ping\n        parameters: {type: object, properties: {}}\n",
        "parameters",
        "tools[0].functions[0].parameters.properties",
        "parameters.properties: should be non-empty for OBJECT type",
    ),
    "a cache file of a type the service refuses": (
        GOOD + "cache:\n  files: [sheet.xlsx]\n",
        "sheet.xlsx",
        "cache.files[0]",
        "sheet.xlsx: the service would refuse this file: Unsupported MIME type: "
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    "mapping key not a string": (GOOD + "labels:\n  [a]: b\n", "[a]", None, "plain strings"),
}


def _line_of(text: str, marker: str | int) -> int:
    if isinstance(marker, int):
        return marker
    return text.count("\n", 0, text.index(marker)) + 1


@pytest.mark.parametrize("case", list(CASES))
def test_bad_spec(case, cli, tmp_path):
    text, marker, field, message = CASES[case]
    write(tmp_path / "data.jsonl", '{"id": 1, "name": "Ada"}\n{"id": 2, "name": "Bo"}\n')
    write(tmp_path / "data.csv", "id,name\n1,Ada\n")
    write(tmp_path / "sheet.xlsx", "PK")
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    result = cli("validate", str(path))
    assert result.code == 1, result.out
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert all(line.startswith(f"{path}:") for line in lines), lines
    hits = [line for line in lines if message in line]
    assert hits, f"no line says {message!r}: {lines}"
    line = hits[0]
    if marker is not None:
        assert line.startswith(f"{path}:{_line_of(text, marker)}:"), line
    if field is not None:
        assert f" {field}: " in line, line


def test_catalogue_is_large_enough():
    assert len(CASES) >= 40


def test_empty_file(cli, tmp_path):
    path = write(tmp_path / "p.yaml", "# nothing here\n")
    result = cli("validate", str(path))
    assert result.code == 1 and "empty" in result.err


def test_duplicate_pipeline_names_name_both_files(cli, tmp_path):
    write(tmp_path / "specs/data.jsonl", '{"id": 1, "name": "x"}\n')
    a = write(tmp_path / "specs/a.yaml", GOOD)
    b = write(tmp_path / "specs/b.yml", GOOD.replace("out.jsonl", "out2.jsonl"))
    result = cli("validate", str(tmp_path / "specs"))
    assert result.code == 1
    assert result.err.startswith(f"{b}:2:") and f"also used in {a}:2" in result.err and "'good'" in result.err


def test_several_pipelines_in_one_file(cli, tmp_path):
    write(tmp_path / "data.jsonl", '{"id": 1, "name": "x"}\n')
    second = GOOD.replace("name: good", "name: second").replace("out.jsonl", "out2.jsonl")
    path = write(tmp_path / "p.yaml", GOOD + "---\n" + second)
    result = cli("validate", str(path))
    assert result.code == 0, result.err
    assert "good: valid" in result.out and "second: valid" in result.out


def test_error_in_the_second_document_has_its_own_line(cli, tmp_path):
    write(tmp_path / "data.jsonl", '{"id": 1, "name": "x"}\n')
    second = GOOD.replace("name: good", "name: second").replace("  prompt:", "  promt:")
    path = write(tmp_path / "p.yaml", GOOD + "---\n" + second)
    result = cli("validate", str(path))
    assert result.code == 1
    line = next(line for line in result.err.splitlines() if "promt" in line)
    assert line.startswith(f"{path}:19:3:")  # 10 lines, the ---, then line 8 of the second


def test_all_problems_are_reported_at_once(cli, tmp_path):
    write(tmp_path / "data.jsonl", '{"id": 1, "name": "x"}\n')
    path = write(
        tmp_path / "p.yaml", GOOD.replace("  prompt:", "  promt:").replace("version: 1", "version: 7")
    )
    lines = cli("validate", str(path)).err.strip().splitlines()
    assert len(lines) >= 2


def test_json_diagnostics(cli, tmp_path):
    path = write(tmp_path / "p.yaml", GOOD.replace("  prompt:", "  promt:"))
    result = cli("validate", "--json", str(path))
    assert result.code == 1
    doc = json.loads(result.out)
    assert doc["valid"] is False
    problem = next(p for p in doc["problems"] if p["field"] == "request.promt")
    assert problem == {
        "file": str(path),
        "line": 8,
        "column": 3,
        "field": "request.promt",
        "message": "unknown field 'promt'; did you mean 'prompt'?",
    }


def test_env_default_is_used(cli, tmp_path):
    write(tmp_path / "data.jsonl", '{"id": 1, "name": "x"}\n')
    path = write(tmp_path / "p.yaml", GOOD.replace("data.jsonl", "${NO_SUCH_VAR_XYZ:-data.jsonl}"))
    assert cli("validate", str(path)).code == 0


def test_guarded_template_fields_are_not_required(cli, tmp_path):
    write(tmp_path / "data.jsonl", '{"id": 1, "name": "x"}\n')
    path = write(
        tmp_path / "p.yaml",
        GOOD.replace(
            "{{ name }}", "{{ name }} {{ note | default('') }}{% if extra is defined %}{{ extra }}{% endif %}"
        ),
    )
    assert cli("validate", str(path)).code == 0


def test_missing_path(cli, tmp_path):
    result = cli("validate", str(tmp_path / "nope.yaml"))
    assert result.code == 1 and "no such file" in result.err


def test_example_pipelines_are_valid(cli):
    examples = Path(__file__).resolve().parent.parent / "pipelines"
    result = cli("validate", str(examples))
    assert result.code == 0, result.err


def test_committed_schema_is_current():
    from batchflow.cli import schema_text

    committed = Path(__file__).resolve().parent.parent / "schemas/pipeline.schema.json"
    assert committed.read_text() == schema_text(), "run `make schema` and commit the result"


def test_the_spec_guide_reference_is_current():
    from batchflow.spec.reference import markdown, section_of

    readme = Path(__file__).resolve().parent.parent / "docs/spec.md"
    assert section_of(readme).strip() == markdown().strip(), "run `make schema` and commit the result"
