"""Output columns follow what the pipeline produces, the same in JSONL, CSV and Parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write

from batchflow.output.columns import COLUMNS, reference_table

BASE = """
    version: 1
    name: cols
    model: gemini-3.8-flash
    source: {uri: data.jsonl, key: "{{ id }}"}
"""


def _run(cli, tmp_path, body: str, fmt="jsonl", rows=None, code=0, model="gemini-3.8-flash") -> list[dict]:
    spec = BASE.replace("gemini-3.8-flash", model) + body.rstrip(" ") + f"    output: {{uri: out.{fmt}}}\n"
    write(tmp_path / "pipelines/cols.yaml", spec)
    rows = rows or [{"id": 1, "city": "Paris"}, {"id": 2, "city": "Oslo"}]
    write(tmp_path / "pipelines/data.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    result = cli("apply", "--wait")
    assert result.code == code, result.out + result.err
    return _read(tmp_path / f"pipelines/out.{fmt}")


def _read(path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    return [json.loads(x) for x in path.read_text().splitlines()]


def _value(row: dict, name: str):
    """A nested column as data, whichever format wrote it (CSV holds JSON text)."""
    value = row[name]
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_grounding_sources_and_queries(cli, emulator_env, tmp_path, fmt):
    rows = _run(
        cli, tmp_path, '    request: {prompt: "News about {{ city }}"}\n    tools: [google_search]\n', fmt
    )
    grounding = _value(rows[0], "grounding")
    assert grounding["queries"] == ["News about Paris"]
    assert (
        grounding["sources"][0]["uri"].startswith("https://example.com/") and grounding["sources"][0]["title"]
    )
    assert "embedding" not in rows[0] and "function_calls" not in rows[0] and "json" not in rows[0]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_function_calls(cli, emulator_env, tmp_path, fmt):
    body = """
    request: {prompt: "What is the weather in {{ city }}? Use get_weather."}
    tools:
      - functions:
          - name: get_weather
            parameters: {type: object, properties: {city: {type: string}}, required: [city]}
    """
    rows = _run(cli, tmp_path, body, fmt)
    (call,) = _value(rows[0], "function_calls")
    args = json.loads(call["args"]) if isinstance(call["args"], str) else call["args"]
    assert call["name"] == "get_weather" and isinstance(args["city"], str)
    assert rows[0]["text"] in ("", None)
    assert "grounding" not in rows[0]


def test_a_blocked_prompt_is_an_error_row_with_its_reason(cli, emulator, emulator_env, tmp_path):
    emulator.store.faults.update({"prompt_block_rate": 1})
    rows = _run(cli, tmp_path, '    request: {prompt: "Say {{ city }}"}\n', code=3)
    assert rows[0]["error"] == {
        "code": None,
        "status": "BLOCKED",
        "message": "the prompt was blocked: SAFETY",
    }
    assert "text" not in rows[0] and rows[0]["usage"]["prompt_tokens"] > 0


def test_finish_reasons_and_the_error_policy(cli, emulator, emulator_env, tmp_path):
    body = '    request: {prompt: "Say {{ city }}", generation_config: {max_output_tokens: 3}}\n'
    rows = _run(cli, tmp_path, body)  # cut answers are kept, not errors, by default
    assert rows[0]["finish_reason"] == "MAX_TOKENS" and "error" not in rows[0] and rows[0]["text"]
    rows = _run(cli, tmp_path, body + "    errors: {finish_reasons: [MAX_TOKENS]}\n", code=3)
    assert rows[0]["error"]["status"] == "FINISH_REASON" and "MAX_TOKENS" in rows[0]["error"]["message"]
    assert rows[0]["text"] and rows[0]["finish_reason"] == "MAX_TOKENS"
    emulator.store.faults.update({"safety_stop_rate": 1})
    (tmp_path / "state").rename(tmp_path / "old-state")  # a fresh start: the answers differ now
    rows = _run(cli, tmp_path, '    request: {prompt: "Say {{ city }}"}\n', code=3)
    assert rows[0]["finish_reason"] == "SAFETY" and rows[0]["error"]["status"] == "FINISH_REASON"


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_candidates_and_thoughts(cli, emulator_env, tmp_path, fmt):
    body = """
    request:
      prompt: "Say {{ city }}"
      generation_config: {candidate_count: 2, thinking_config: {include_thoughts: true}}
    """
    rows = _run(cli, tmp_path, body, fmt)
    row = rows[0]
    candidates = _value(row, "candidates")
    assert len(candidates) == 2 and candidates[0]["text"] == row["text"] != candidates[1]["text"]
    thoughts_tokens = int(row["usage_thoughts_tokens"]) if fmt == "csv" else row["usage"]["thoughts_tokens"]
    assert row["thoughts"].startswith("Thinking about") and thoughts_tokens > 0
    assert row["thoughts"] not in row["text"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_include_response(cli, emulator_env, tmp_path, fmt):
    output = f"    output: {{uri: out.{fmt}, include_response: true}}\n"
    write(tmp_path / "pipelines/cols.yaml", BASE + '    request: {prompt: "Say {{ city }}"}\n' + output)
    write(tmp_path / "pipelines/data.jsonl", '{"id": 1, "city": "Rome"}\n')
    assert cli("apply", "--wait").code == 0
    (row,) = _read(tmp_path / f"pipelines/out.{fmt}")
    assert _value(row, "response")["candidates"][0]["content"]["parts"][0]["text"] == row["text"]


def test_structured_output_is_a_struct_in_parquet(cli, emulator_env, tmp_path):
    body = """
    request:
      prompt: "Tag {{ city }}"
      generation_config:
        response_mime_type: application/json
        response_schema:
          type: object
          properties:
            category: {type: string, enum: [city, town]}
            tags: {type: array, items: {type: string}}
            score: {type: number}
            capital: {type: boolean}
          required: [category, tags, score, capital]
    """
    rows = _run(cli, tmp_path, body, "parquet")
    schema = pq.read_schema(tmp_path / "pipelines/out.parquet")
    kind = schema.field("json").type
    assert pa.types.is_struct(kind)
    assert {kind.field(i).name: str(kind.field(i).type) for i in range(kind.num_fields)} == {
        "category": "string",
        "tags": "list<element: string>",
        "score": "double",
        "capital": "bool",
    }
    assert rows[0]["json"]["category"] in ("city", "town") and isinstance(rows[0]["json"]["tags"], list)
    assert "embedding" not in schema.names and "function_calls" not in schema.names


def test_a_schema_that_cannot_map_falls_back_to_json_text(cli, emulator_env, tmp_path):
    body = """
    request:
      prompt: "Tag {{ city }}"
      generation_config:
        response_mime_type: application/json
        response_json_schema: {anyOf: [{type: string}, {type: integer}]}
    """
    rows = _run(cli, tmp_path, body, "parquet")
    assert pq.read_schema(tmp_path / "pipelines/out.parquet").field("json").type == pa.string()
    assert isinstance(json.loads(rows[0]["json"]), str | int)


def test_embedding_outputs_have_only_the_embedding(cli, emulator_env, tmp_path):
    body = '    embed: {content: "{{ city }}", output_dimensionality: 4}\n'
    rows = _run(cli, tmp_path, body.replace("gemini-3.8-flash", ""), "parquet", model="gemini-embedding-001")
    names = pq.read_schema(tmp_path / "pipelines/out.parquet").names
    assert names == ["key", "embedding", "error"] and len(rows[0]["embedding"]) == 4


def test_csv_sources_keep_declared_types(cli, emulator_env, tmp_path):
    write(
        tmp_path / "pipelines/cols.yaml",
        """
        version: 1
        name: cols
        model: gemini-3.8-flash
        source:
          uri: data.csv
          key: "{{ sku }}"
          csv: {types: {price: number, stock: integer, active: boolean}}
        request: {prompt: "{% if price > 5 %}Pricey{% else %}Cheap{% endif %} {{ sku }}"}
        output: {uri: out.parquet, columns: [sku, price, stock, active]}
        """,
    )
    write(tmp_path / "pipelines/data.csv", "sku,price,stock,active\nA,9.5,3,true\nB,1.25,,no\n")
    assert cli("validate").code == 0
    assert cli("apply", "--wait").code == 0
    table = pq.read_table(tmp_path / "pipelines/out.parquet")
    assert (
        str(table.schema.field("price").type) == "double" and str(table.schema.field("stock").type) == "int64"
    )
    rows = table.to_pylist()
    assert rows[0]["active"] is True and rows[1]["stock"] is None and rows[1]["active"] is False
    assert "Pricey" in rows[0]["text"] and "Cheap" in rows[1]["text"]
    write(tmp_path / "pipelines/data.csv", "sku,price,stock,active\nA,9.5,3,true\nB,cheap,1,no\n")
    bad = cli("validate")
    assert bad.code == 1
    assert "pipelines/data.csv:3: price: 'cheap' is not a number (source.csv.types)" in bad.err
    spec = tmp_path / "pipelines/cols.yaml"
    spec.write_text(spec.read_text().replace("price: number", "prize: number"))
    typo = cli("validate")
    assert typo.code == 1 and "source.csv.types.prize: field 'prize' is not in the source" in typo.err


def test_a_spreadsheets_csv_in_and_out(cli, emulator, emulator_env, tmp_path):
    """A CSV saved by a spreadsheet as UTF-8 starts with a byte-order mark: its first column is
    still `sku`. Booleans come out of CSV as the json column spells them. With errors.uri, the
    error rows go there and the output has no error columns, always empty."""
    write(
        tmp_path / "pipelines/cols.yaml",
        """
        version: 1
        name: cols
        model: gemini-3.8-flash
        source:
          uri: data.csv
          key: "{{ sku }}"
          csv: {types: {active: boolean}}
        request: {prompt: "Say {{ sku }}"}
        output: {uri: out.csv, columns: [sku, active]}
        errors: {uri: errors.jsonl, max_rate: 1}
        """,
    )
    (tmp_path / "pipelines/data.csv").write_bytes("\ufeffsku,active\nA,true\nB,no\n".encode())
    assert cli("validate").code == 0
    done = cli("apply", "--wait")
    assert done.code == 0, done.out + done.err
    rows = _read(tmp_path / "pipelines/out.csv")
    assert [(r["key"], r["sku"], r["active"]) for r in rows] == [("A", "A", "true"), ("B", "B", "false")]
    assert not any(name.startswith("error") for name in rows[0])


def test_the_spec_guide_documents_every_column():
    readme = (Path(__file__).parents[1] / "docs/spec.md").read_text()
    assert reference_table() in readme
    assert all(f"| `{c.name}` |" in readme for c in COLUMNS)
