"""A poll costs what the state says: while nothing a scan reads has changed, the source is not
rendered again; any change to what it reads is noticed."""

from __future__ import annotations

import json
import os

import fsspec
import pytest
from conftest import write

from batchflow.run import reconcile

SPEC = """
    version: 1
    name: memo
    model: gemini-3.8-flash
    source: {uri: SOURCE, key: "{{ id }}"}
    request: {prompt: "${GREETING:-Say} {{ word }}", files: ["{{ image }}"]}
    output: {uri: out.jsonl}
"""


@pytest.fixture
def renders(monkeypatch):
    """How many times a scan read the source."""
    calls = []
    original = reconcile.records

    def counted(pipeline):
        calls.append(pipeline.name)
        return original(pipeline)

    monkeypatch.setattr(reconcile, "records", counted)
    return calls


def _lines(n: int) -> str:
    return "".join(json.dumps({"id": i, "word": f"w{i}", "image": "pic.png"}) + "\n" for i in range(n))


def _project(tmp_path, source: str = "data.jsonl") -> None:
    write(tmp_path / "pipelines/memo.yaml", SPEC.replace("SOURCE", source))
    (tmp_path / "pipelines/pic.png").write_bytes(b"\x89PNG one")


def test_polls_do_not_render_while_jobs_run(cli, emulator, emulator_env, tmp_path, renders):
    _project(tmp_path)
    write(tmp_path / "pipelines/data.jsonl", _lines(3))
    emulator.store.clock.set_speed(1)  # the job stays at work
    assert cli("apply").code == 0
    # The first scan met the image file as it read it; the next one stamps it too, once.
    assert cli("apply").code == 0
    renders.clear()
    for _ in range(3):
        assert "waiting for 1 job(s)" in cli("apply").out
        assert cli("plan").code == 0
    assert renders == []  # three polls and three plans, no render
    emulator.store.clock.advance(3600)
    assert cli("apply").code == 0  # results arrived: one full scan finds the work done
    renders.clear()
    assert cli("apply").out.strip() == "memo: up to date, nothing to do"
    assert renders == []


def test_every_change_to_what_a_scan_reads_is_noticed(cli, emulator_env, tmp_path, renders, monkeypatch):
    _project(tmp_path)
    data = tmp_path / "pipelines/data.jsonl"
    write(data, _lines(3))
    assert cli("apply", "--wait").code == 0

    def planned() -> str:
        renders.clear()
        out = cli("plan").out
        assert renders, "the change was not noticed"
        return out

    renders.clear()
    assert "up to date" in cli("plan").out and renders == []
    os.utime(data, ns=(1, 1))  # touched: read again, nothing new
    assert "up to date" in planned()
    assert cli("apply").code == 0
    data.write_text(_lines(4))  # appended
    assert "submit 1 new request (" in planned()
    monkeypatch.setenv("GREETING", "Hello")  # a ${VAR} the spec uses
    assert "submit 4 new requests" in planned()
    monkeypatch.delenv("GREETING")
    spec = tmp_path / "pipelines/memo.yaml"
    spec.write_text(spec.read_text().replace("{{ word }}", "{{ word }}!"))  # an edited prompt
    assert "submit 4 new requests" in planned()
    spec.write_text(spec.read_text().replace("{{ word }}!", "{{ word }}"))
    (tmp_path / "pipelines/pic.png").write_bytes(b"\x89PNG two")  # a file the requests send
    assert "submit 4 new requests" in planned()


def test_a_replaced_object_in_a_bucket_is_noticed(cli, emulator_env, s3_bucket, tmp_path, renders):
    uri = f"s3://{s3_bucket}/in/data.jsonl"
    _project(tmp_path, source=uri)
    with fsspec.open(uri, "w") as f:
        f.write(_lines(3))
    assert cli("apply", "--wait").code == 0
    renders.clear()
    assert "up to date" in cli("plan").out and renders == []
    with fsspec.open(uri, "w") as f:  # same size, other content
        f.write(_lines(3).replace("w1", "x1"))
    out = cli("plan").out
    assert renders and "submit 1 new request (" in out
