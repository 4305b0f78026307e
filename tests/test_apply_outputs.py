"""Sources, sinks and pipeline kinds through apply against the emulator."""

from __future__ import annotations

import csv
import json

import httpx2 as httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write

from batchflow.output import sinks

ITEMS = [{"sku": f"S{i}", "title": f"item {i}", "price": i * 1.5} for i in range(5)]


def _spec(tmp_path, body: str, name: str = "p", items: list[dict] = ITEMS):
    write(tmp_path / "pipelines/data/items.jsonl", "".join(json.dumps(i) + "\n" for i in items))
    write(tmp_path / f"pipelines/{name}.yaml", body)


def test_csv_output_with_columns(cli, emulator_env, tmp_path):
    _spec(
        tmp_path,
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data/items.jsonl, key: "{{ sku }}"}
        request: {prompt: "Describe {{ title }}"}
        output: {uri: out/items.csv, columns: [title, price]}
    """,
    )
    assert cli("apply", "--wait").code == 0
    with open(tmp_path / "pipelines/out/items.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["key"] for r in rows] == [i["sku"] for i in ITEMS]
    assert list(rows[0])[:3] == ["key", "title", "price"]
    assert rows[1]["price"] == "1.5" and "item 1" in rows[1]["text"]
    assert int(rows[0]["usage_total_tokens"]) > 0 and rows[0]["error_message"] == ""


def test_parquet_source_and_output(cli, emulator_env, tmp_path):
    (tmp_path / "pipelines/data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ITEMS), tmp_path / "pipelines/data/items.parquet")
    write(
        tmp_path / "pipelines/p.yaml",
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data/items.parquet, key: "{{ sku }}"}
        request: {prompt: "Describe {{ title }} at {{ price }}"}
        output: {uri: out/items.parquet, columns: [price]}
    """,
    )
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    table = pq.read_table(tmp_path / "pipelines/out/items.parquet").to_pylist()
    assert [r["key"] for r in table] == [i["sku"] for i in ITEMS]
    assert table[2]["price"] == 3.0 and table[2]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("where", ["first rows", "a later row group"])
def test_a_kept_column_of_mixed_types_is_one_line_for_parquet(cli, emulator_env, tmp_path, where):
    """A Parquet column holds one type: a source field that is text here and a number there is
    an error the user fixes, said in one line, with no file left half written."""
    n = 5 if where == "first rows" else sinks.PARQUET_BATCH + 5
    items = [{"sku": f"S{i}", "tags": ["a", "b"]} for i in range(n)]
    items[-1]["tags"] = ["a", 1]
    _spec(
        tmp_path,
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data/items.jsonl, key: "{{ sku }}"}
        request: {prompt: "Describe {{ sku }}"}
        output: {uri: out/items.parquet, columns: [tags]}
    """,
        items=items,
    )
    done = cli("apply", "--wait")
    assert done.code == 1
    (line,) = done.err.strip().splitlines()
    assert "out/items.parquet: column 'tags' cannot be written to Parquet: " in line, line
    assert "its values must be of one type" in line and "Traceback" not in done.err
    assert not (tmp_path / "pipelines/out/items.parquet").exists()


def test_csv_source_with_delimiter(cli, emulator_env, tmp_path):
    write(tmp_path / "pipelines/data/items.csv", "sku;title\nA;first\nB;second\n")
    write(
        tmp_path / "pipelines/p.yaml",
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data/items.csv, key: "{{ sku }}", csv: {delimiter: ";"}}
        request: {prompt: "Say {{ title }}"}
        output: {uri: out.jsonl}
    """,
    )
    assert cli("apply", "--wait").code == 0
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["A", "B"] and "second" in rows[1]["text"]


def test_embedding_pipeline(cli, client, emulator_env, tmp_path):
    _spec(
        tmp_path,
        """
        version: 1
        name: p
        model: gemini-embedding-001
        source: {uri: data/items.jsonl, key: "{{ sku }}"}
        embed:
          content: "{{ title }}"
          task_type: RETRIEVAL_DOCUMENT
          output_dimensionality: 8
        output: {uri: out/vectors.jsonl}
    """,
    )
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out/vectors.jsonl").read_text().splitlines()]
    assert [len(r["embedding"]) for r in rows] == [8] * 5
    assert rows[0]["embedding"] != rows[1]["embedding"]


def test_tools_and_settings_reach_the_request(cli, emulator_env, tmp_path):
    _spec(
        tmp_path,
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data/items.jsonl, key: "{{ sku }}"}
        request:
          prompt: "News about {{ title }}"
          safety_settings: [{category: HARM_CATEGORY_HARASSMENT, threshold: BLOCK_ONLY_HIGH}]
          labels: {team: catalog}
          generation_config: {thinking_config: {thinking_budget: 0}}
        tools: [google_search]
        output: {uri: out.jsonl}
    """,
    )
    assert cli("apply", "--wait").code == 0
    shard = next((tmp_path / "state/p/shards").glob("*.jsonl"))
    request = json.loads(shard.read_text().splitlines()[0])["request"]
    assert request["tools"] == [{"googleSearch": {}}]
    assert request["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}
    ]
    assert request["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 0}}
    assert request["labels"] == {"team": "catalog"}


def test_failed_lines_are_retried_then_go_to_the_errors_sink(cli, client, emulator, emulator_env, tmp_path):
    _spec(
        tmp_path,
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data/items.jsonl, key: "{{ sku }}"}
        request: {prompt: "Describe {{ title }}"}
        retry: {attempts: 2}
        output: {uri: out/ok.jsonl}
        errors: {uri: out/failed.jsonl}
    """,
    )
    httpx.post(f"{emulator.url}/_emulator/faults", json={"line_error_rate": 1.0}).raise_for_status()
    result = cli("apply", "--wait")
    assert result.code == 3, result.err  # every request failed for good
    assert "p: error: 5 of 5 requests failed" in result.err and "out/failed.jsonl" in result.err
    assert len(list(client.batches.list())) == 2  # the first try and one retry of all 5 lines
    assert (tmp_path / "pipelines/out/ok.jsonl").read_text() == ""
    failed = [json.loads(x) for x in (tmp_path / "pipelines/out/failed.jsonl").read_text().splitlines()]
    assert [r["key"] for r in failed] == [i["sku"] for i in ITEMS]
    assert all(r["error"]["code"] == 500 for r in failed)

    # The service recovers: nothing is retried by itself (attempts are spent) until the spec asks for more.
    httpx.post(f"{emulator.url}/_emulator/faults", json={"line_error_rate": 0.0}).raise_for_status()
    again = cli("apply")
    assert "up to date" in again.out and again.code == 3
    spec = (tmp_path / "pipelines/p.yaml").read_text().replace("attempts: 2", "attempts: 3")
    (tmp_path / "pipelines/p.yaml").write_text(spec)
    assert cli("apply", "--wait").code == 0
    assert len((tmp_path / "pipelines/out/ok.jsonl").read_text().splitlines()) == 5
    assert (tmp_path / "pipelines/out/failed.jsonl").read_text() == ""


def test_some_lines_fail_once_and_succeed_on_retry(cli, client, emulator, emulator_env, tmp_path):
    _spec(
        tmp_path,
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data/items.jsonl, key: "{{ sku }}"}
        request: {prompt: "Describe {{ title }}"}
        output: {uri: out.jsonl}
    """,
    )
    httpx.post(
        f"{emulator.url}/_emulator/faults", json={"line_error_rate": 0.5, "seed": 2}
    ).raise_for_status()
    assert cli("apply", "--wait").code == 0
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [i["sku"] for i in ITEMS]
    assert len(list(client.batches.list())) >= 2


def test_small_jobs_go_inline(cli, client, emulator_env, tmp_path):
    _spec(
        tmp_path,
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data/items.jsonl, key: "{{ sku }}"}
        request:
          system: Be brief.
          prompt: "Describe {{ title }}"
          generation_config:
            response_mime_type: application/json
            response_schema: {type: OBJECT, properties: {tag: {type: STRING}}, required: [tag]}
        batch: {inline_below: 1MB, max_requests: 3}
        output: {uri: out.jsonl}
    """,
    )
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert "upload" not in result.out and "inline requests" not in result.out
    assert [f for f in client.files.list()] == []
    jobs = list(client.batches.list())
    assert len(jobs) == 2 and all(j.dest.inlined_responses for j in jobs)
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [i["sku"] for i in ITEMS]
    assert all(set(r["json"]) == {"tag"} and r["usage"]["prompt_tokens"] > 0 for r in rows)
    assert "up to date" in cli("apply").out
