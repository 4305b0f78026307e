"""gs:// and s3:// sources, outputs and request files, against local object stores."""

from __future__ import annotations

import io
import json

import fsspec
import pyarrow.parquet as pq
from conftest import write

ITEMS = [{"sku": f"S{i}", "title": f"item {i}"} for i in range(4)]


def test_s3_source_and_output(cli, emulator_env, s3_bucket, tmp_path):
    with fsspec.open(f"s3://{s3_bucket}/in/items.jsonl", "w") as f:
        f.write("".join(json.dumps(i) + "\n" for i in ITEMS))
    write(
        tmp_path / "pipelines/p.yaml",
        f"""
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {{uri: "s3://{s3_bucket}/in/items.jsonl", key: "{{{{ sku }}}}"}}
        request: {{prompt: "Describe {{{{ title }}}}"}}
        output: {{uri: "s3://{s3_bucket}/out/items.jsonl", columns: [title]}}
    """,
    )
    assert cli("validate").code == 0  # no peeking at remote sources: no network in validate
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    with fsspec.open(f"s3://{s3_bucket}/out/items.jsonl") as f:
        rows = [json.loads(line) for line in f.read().splitlines()]
    assert [r["key"] for r in rows] == [i["sku"] for i in ITEMS]
    assert rows[0]["title"] == "item 0" and "item 0" in rows[0]["text"]
    assert "up to date" in cli("apply").out


def test_gs_glob_source_and_parquet_output(cli, emulator_env, gcs_bucket, tmp_path):
    for part, items in (("a", ITEMS[:2]), ("b", ITEMS[2:])):
        with fsspec.open(f"gs://{gcs_bucket}/in/{part}.csv", "w", token="anon") as f:
            f.write("sku,title\n" + "".join(f"{i['sku']},{i['title']}\n" for i in items))
    write(
        tmp_path / "pipelines/p.yaml",
        f"""
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {{uri: "gs://{gcs_bucket}/in/*.csv", key: "{{{{ sku }}}}"}}
        request: {{prompt: "Describe {{{{ title }}}}"}}
        output: {{uri: "gs://{gcs_bucket}/out/items.parquet"}}
    """,
    )
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    with fsspec.open(f"gs://{gcs_bucket}/out/items.parquet", "rb", token="anon") as f:
        rows = pq.read_table(io.BytesIO(f.read())).to_pylist()
    assert [r["key"] for r in rows] == [i["sku"] for i in ITEMS]


def _describe_one_image(tmp_path, uri: str) -> None:
    """A pipeline of one record whose request names the image at `uri`."""
    write(tmp_path / "pipelines/data.jsonl", json.dumps({"id": 1, "img": uri}) + "\n")
    write(
        tmp_path / "pipelines/p.yaml",
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data.jsonl, key: "{{ id }}"}
        request: {prompt: Describe., files: ["{{ img }}"]}
        output: {uri: out.jsonl}
    """,
    )


def test_request_files_from_s3(cli, client, emulator_env, s3_bucket, tmp_path):
    with fsspec.open(f"s3://{s3_bucket}/img/cat.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"cat" * 10)
    _describe_one_image(tmp_path, f"s3://{s3_bucket}/img/cat.png")
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert [f.mime_type for f in client.files.list() if f.mime_type == "image/png"] == ["image/png"]


def test_missing_s3_source_is_one_clear_line(cli, emulator_env, s3_bucket, tmp_path):
    write(
        tmp_path / "pipelines/p.yaml",
        f"""
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {{uri: "s3://{s3_bucket}/nope.jsonl"}}
        request: {{prompt: hi}}
        output: {{uri: out.jsonl}}
    """,
    )
    result = cli("apply")
    assert result.code == 1
    assert result.err.startswith(f"p: error: s3://{s3_bucket}/nope.jsonl: ") and "Traceback" not in result.err


def test_gs_commands_print_no_bucket_type_warnings(gcs_bucket, tmp_path):
    import os
    import subprocess
    import sys

    write(
        tmp_path / "pipelines/p.yaml",
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: in.jsonl}
        request: {prompt: "{{ q }}"}
        output: {uri: out.jsonl}
    """,
    )
    write(tmp_path / "pipelines/in.jsonl", '{"q": 1}\n')
    env = {k: v for k, v in os.environ.items() if k != "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"}
    env["BATCHFLOW_STATE"] = f"gs://{gcs_bucket}/state"
    done = subprocess.run(
        [sys.executable, "-m", "batchflow", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "output: not written yet" in done.stdout
    assert done.stderr == ""  # gcsfs's "Could not determine bucket type" lines, among others


def test_a_missing_gs_file_named_by_a_record_is_one_clear_line(
    cli, client, emulator_env, gcs_bucket, tmp_path
):
    """gcsfs names a missing object by its URL path (b/bucket/o/media%2F...): say the gs:// URI."""
    uri = f"gs://{gcs_bucket}/media/cat.png"
    _describe_one_image(tmp_path, uri)
    result = cli("apply")
    assert result.code == 1
    assert result.err.strip().endswith(
        f"pipelines/data.jsonl:1: record '1': request.files[0]: {uri}: file not found (pipelines/p.yaml)"
    ), result.err
    assert list(client.files.list()) == []
