"""Output files: one schema whatever the first rows hold."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import pyarrow.parquet as pq

from batchflow.output import sinks
from batchflow.output.sinks import Layout, open_sink
from batchflow.spec.models import Pipeline
from batchflow.state.atomic import atomic_open

SPEC = Pipeline.model_validate(
    {
        "version": 1,
        "name": "p",
        "model": "gemini-3.8-flash",
        "source": {"uri": "in.jsonl"},
        "request": {"prompt": "x", "generation_config": {"response_mime_type": "application/json"}},
        "output": {"uri": "o.parquet", "columns": ["price"]},
    }
)
LAYOUT = Layout.of(SPEC)

ERROR = {"key": "a", "price": 1.5, "error": {"code": 500, "status": "INTERNAL", "message": "boom"}}
OK = {
    "key": "b",
    "price": 2.0,
    "text": "{}",
    "finish_reason": "STOP",
    "usage": {
        "prompt_tokens": 1,
        "output_tokens": 2,
        "cached_tokens": 0,
        "thoughts_tokens": 0,
        "total_tokens": 3,
    },
    "json": {"tags": ["x"], "nested": {"n": 1}},
}
OTHER_SHAPE = {**OK, "key": "c", "json": ["a", "list", "this", "time"]}


def test_parquet_keeps_fields_that_first_rows_lack(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks, "PARQUET_BATCH", 1)  # a row group per row: the first decides nothing
    with open_sink(str(tmp_path / "o.parquet"), "parquet", LAYOUT) as sink:
        for row in (ERROR, OK, OTHER_SHAPE):
            sink.write(row)
    rows = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert [r["key"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["error"]["code"] == 500 and rows[0]["text"] is None
    assert json.loads(rows[1]["json"]) == OK["json"] and json.loads(rows[2]["json"]) == OTHER_SHAPE["json"]
    assert rows[1]["usage"]["total_tokens"] == 3 and rows[1]["price"] == 2.0


def test_rows_given_in_batches_make_the_same_parquet_file(tmp_path, monkeypatch):
    """The output join hands rows over by batches of any size: row groups stay PARQUET_BATCH rows."""
    monkeypatch.setattr(sinks, "PARQUET_BATCH", 4)
    rows = [{**OK, "key": f"k{i}", "price": float(i)} for i in range(10)]
    with open_sink(str(tmp_path / "one.parquet"), "parquet", LAYOUT) as sink:
        for row in rows:
            sink.write(row)
    with open_sink(str(tmp_path / "batches.parquet"), "parquet", LAYOUT) as sink:
        sink.write_many(rows[:3], 3)
        sink.write_many(rows[3:], 7)
        assert sink.count == 10
    assert (tmp_path / "batches.parquet").read_bytes() == (tmp_path / "one.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "batches.parquet").metadata.num_row_groups == 3


def test_parquet_rows_by_column_make_the_file_dicts_make(tmp_path, monkeypatch):
    """Without columns to retype, a Parquet sink takes rows by column (as workers send them),
    and the file is the one Arrow makes of the rows as dicts, row group by row group."""
    import pyarrow as pa

    monkeypatch.setattr(sinks, "PARQUET_BATCH", 4)
    plain = Layout.of(
        SPEC.model_copy(update={"request": SPEC.request.model_copy(update={"generation_config": None})})
    )
    oks = [{k: v for k, v in OK.items() if k != "json"} | {"key": f"k{i}", "price": i} for i in range(9)]
    rows = [ERROR, *oks]
    with open_sink(str(tmp_path / "dicts.parquet"), "parquet", plain) as sink:
        assert sink.columns == ("key", "price", "text", "finish_reason", "usage", "error")
        for row in rows:
            sink.write(row)
    with open_sink(str(tmp_path / "columns.parquet"), "parquet", plain) as sink:
        for part in (rows[:3], rows[3:]):
            sink.write_many({name: [r.get(name) for r in part] for name in sink.columns}, len(part))
    schema = pq.read_schema(tmp_path / "dicts.parquet")
    assert schema.field("price").type == pa.float64()  # from the first rows: 1.5, then 0, 1...
    with pq.ParquetWriter(tmp_path / "arrow.parquet", schema) as writer:
        for start in range(0, len(rows), 4):
            writer.write_table(pa.Table.from_pylist(rows[start : start + 4], schema=schema))
    made = (tmp_path / "arrow.parquet").read_bytes()
    assert (tmp_path / "dicts.parquet").read_bytes() == made == (tmp_path / "columns.parquet").read_bytes()


def test_csv_header_is_the_same_whatever_comes_first(tmp_path):
    with open_sink(str(tmp_path / "o.csv"), "csv", LAYOUT) as sink:
        sink.write(ERROR)
        sink.write(OK)
    with open(tmp_path / "o.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["error_message"] == "boom" and rows[1]["text"] == "{}"
    assert json.loads(rows[1]["json"]) == OK["json"]


def test_a_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "o.jsonl"
    try:
        with open_sink(str(target), "jsonl", LAYOUT) as sink:
            sink.write(OK)
            raise RuntimeError("interrupted")
    except RuntimeError:
        pass
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_temporary_file_a_killed_writer_left_is_removed_by_the_next(tmp_path):
    """A kill -9 while an output is written leaves its temporary file; the next writer of that
    file on this host removes it once its process is gone, and no other."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    left = tmp_path / f".out.jsonl.{host}.{gone.pid}.k3j2.tmp"
    at_work = tmp_path / f".out.jsonl.{host}.{os.getpid()}.a8d1.tmp"  # a writer still running
    elsewhere = tmp_path / f".out.jsonl.another-host.{gone.pid}.q0w9.tmp"
    other_file = tmp_path / f".other.jsonl.{host}.{gone.pid}.z7x6.tmp"
    for path in (left, at_work, elsewhere, other_file):
        path.write_bytes(b"half written")
    with atomic_open(tmp_path / "out.jsonl") as f:
        f.write(b"whole\n")
    assert not left.exists() and at_work.exists() and elsewhere.exists() and other_file.exists()
    assert (tmp_path / "out.jsonl").read_bytes() == b"whole\n"


def test_jsonl_lines_are_what_json_dumps_writes():
    """encode_jsonl reuses json's C encoder; the bytes must stay those of json.dumps."""
    from batchflow.output.join import encode_jsonl

    rows = [
        ERROR,
        OK,
        OTHER_SHAPE,
        {"key": 'é\u2028"\\\n\t\x00\x1f\x7f', "x": [1e16, 1e-7, -0.0, 0.1 + 0.2, 2**70, -(2**64)]},
        {"key": "nan", "x": [float("nan"), float("inf"), -float("inf")], "y": {"": None, "t": True}},
        {"key": "🙂 ünï", "x": {"deep": [[[{"a": []}]]], "empty": {}}, "n": None},
    ]
    for row in rows:
        assert encode_jsonl(row) == (json.dumps(row, ensure_ascii=False) + "\n").encode()
