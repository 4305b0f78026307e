"""A large local JSONL source is rendered by worker processes (parallel.py): what comes out
must be byte for byte what the serial render gives, errors included."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from conftest import write

import batchflow.prepare.parallel
from batchflow.errors import SourceError
from batchflow.prepare.parallel import BATCH_LINES
from batchflow.run.reconcile import scan
from batchflow.spec.loader import load_pipelines
from batchflow.state.store import LocalStore, PipelineState

SPEC = """
version: 1
name: p
model: gemini-3.8-flash
source: {uri: "data/*.jsonl", key: "{{ id }}"}
request:
  system: You describe things.
  prompt: "Describe {{ name }} ({{ id }})"
  files: ["{{ image }}"]
batch: {max_requests: 1500}
output: {uri: out.jsonl}
"""


def _project(tmp_path: Path, n: int = 2 * BATCH_LINES + 700, *, files: bool = True) -> Path:
    """Without files, the templates are plain fields: records render in a loop a batch at a
    time (Renderer.render_plain), else one by one."""
    write(tmp_path / "p.yaml", SPEC if files else SPEC.replace('  files: ["{{ image }}"]\n', ""))
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"a" * 64)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"b" * 64)
    half = n // 2
    for name, ids in (("1.jsonl", range(half)), ("2.jsonl", range(half, n))):
        lines = []
        for i in ids:
            record = {"id": f"r{i}", "name": f"thing {i} ünïcode", "image": "ab"[i % 2] + ".png"}
            if i % 1500 == 7:  # beyond 64 bits: its batch is parsed line by line
                record["big"] = 2**70 + i
            lines.append(json.dumps(record))
            if i % 997 == 0:
                lines.append("   ")  # blank lines count as lines, and hold no record
        write(tmp_path / "data" / name, "\n".join(lines) + "\n")
    return tmp_path / "p.yaml"


def _scan(spec: Path, folder: Path, monkeypatch, parallel: bool):
    monkeypatch.setenv("BATCHFLOW_PARALLEL_MIN_BYTES", "0" if parallel else str(10**15))
    (pipeline,) = load_pipelines([spec])
    shutil.rmtree(folder, ignore_errors=True)
    store = LocalStore(folder)
    with contextlib.closing(store.index("p")) as index:
        return scan(pipeline, PipelineState(pipeline="p"), store, index, write=True), folder / "p" / "shards"


@pytest.mark.parametrize("threads", [1, 2], ids=["forked", "from the fork server"])
@pytest.mark.parametrize("files", [True, False], ids=["record by record", "plain"])
def test_a_parallel_prepare_writes_the_same_shards_as_a_serial_one(tmp_path, monkeypatch, files, threads):
    """Workers are forked when this process has no other thread, else come from the fork server."""
    monkeypatch.setattr(batchflow.prepare.parallel, "_threads", lambda: threads)
    spec = _project(tmp_path, files=files)
    serial, serial_shards = _scan(spec, tmp_path / "serial", monkeypatch, parallel=False)
    parallel, parallel_shards = _scan(spec, tmp_path / "parallel", monkeypatch, parallel=True)
    assert [s.id for s in parallel.new_shards] == [s.id for s in serial.new_shards]
    assert len(serial.new_shards) == 4
    assert (parallel.requests, parallel.digest) == (serial.requests, serial.digest)
    assert (parallel.new_tokens, parallel.sample) == (serial.new_tokens, serial.sample)
    assert list(parallel.files.items()) == list(serial.files.items()) and len(serial.files) == 2 * files
    names = sorted(p.name for p in serial_shards.iterdir())
    assert names == sorted(p.name for p in parallel_shards.iterdir())
    for name in names:  # shards and their keys files
        assert (parallel_shards / name).read_bytes() == (serial_shards / name).read_bytes()


MIDDLES = {
    "nothing": b"",
    "CRLF": b'{"a": 1}\r\n{"b": 2}\r\n',
    "a lone CR": b'{"a": 1}\r{"b": 2}\n',
    "not UTF-8": b'{"a": "\xff"}\n',
}


@pytest.mark.parametrize("block", [5, 64, 1 << 20])
@pytest.mark.parametrize("end", ["\n", ""], ids=["newline at the end", "none"])
@pytest.mark.parametrize("middle", list(MIDDLES))
def test_a_source_is_cut_into_lines_as_the_serial_reader_cuts_it(tmp_path, monkeypatch, block, end, middle):
    """Read in blocks of `block` bytes, lines and their numbers are those of the serial
    reader, blank lines (Unicode whitespace too) left out, whatever falls on a block's edge."""
    monkeypatch.setattr(batchflow.prepare.parallel, "BLOCK", block)
    lines = [json.dumps({"id": i, "t": "ünï😀 " * (i % 4)}, ensure_ascii=False) for i in range(40)]
    lines[3:4] = ["   ", "", "\x0c\u00a0\u2028", ' {"indented": true}']
    data = ("\n".join(lines[:20]) + "\n").encode() + MIDDLES[middle] + ("\n".join(lines[20:]) + end).encode()
    (tmp_path / "d.jsonl").write_bytes(data)
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
    try:
        expected = [(n, line.rstrip("\r\n")) for n, line in enumerate(text, 1) if line.strip()]
    except UnicodeDecodeError:
        with pytest.raises(SourceError, match="not UTF-8 text"):
            list(batchflow.prepare.parallel._batches([str(tmp_path / "d.jsonl")]))
        return
    got, position = [], 0
    for path, first, numbers, batch in batchflow.prepare.parallel._batches([str(tmp_path / "d.jsonl")]):
        assert (path, first, len(numbers)) == (str(tmp_path / "d.jsonl"), position, len(batch))
        got.extend(zip(numbers, (line.rstrip("\r\n") for line in batch), strict=True))
        position += len(batch)
    assert got == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "r1", "name": "x", "image": "a.png"', "invalid JSON at column"),
        ('["not", "an", "object"]', "each line must be a JSON object"),
        ('{"id": "r0", "name": "x", "image": "a.png"}', "duplicate key"),
        ('{"id": "", "name": "x", "image": "a.png"}', "source.key renders to an empty key"),
        ('{"id": "z", "image": "a.png"}', "request.prompt"),
    ],
)
@pytest.mark.parametrize("files", [True, False], ids=["record by record", "plain"])
def test_errors_of_a_parallel_prepare_are_those_of_a_serial_one(tmp_path, monkeypatch, line, message, files):
    """A bad record deep in the second file: the same message, file and line either way."""
    spec = _project(tmp_path, files=files)
    second = tmp_path / "data/2.jsonl"
    lines = second.read_text().splitlines()
    lines.insert(1500, line)
    second.write_text("\n".join(lines) + "\n")
    said = []
    for parallel in (False, True):
        with pytest.raises(SourceError) as raised:
            _scan(spec, tmp_path / "state", monkeypatch, parallel=parallel)
        said.append(str(raised.value))
    assert said[0] == said[1] and message in said[0], said


@pytest.mark.parametrize("duplicate_first", [True, False], ids=["duplicate first", "bad record first"])
@pytest.mark.parametrize("files", [True, False], ids=["record by record", "plain"])
def test_of_two_bad_records_the_first_is_named_either_way(tmp_path, monkeypatch, duplicate_first, files):
    """A duplicate key and, 50 lines from it, a record that fails to render: in one batch."""
    spec = _project(tmp_path, files=files)
    second = tmp_path / "data/2.jsonl"
    lines = second.read_text().splitlines()
    duplicate, bad = '{"id": "r0", "name": "x", "image": "a.png"}', '{"id": "z", "image": "a.png"}'
    lines.insert(1550, bad if duplicate_first else duplicate)
    lines.insert(1500, duplicate if duplicate_first else bad)
    second.write_text("\n".join(lines) + "\n")
    for parallel in (False, True):
        with pytest.raises(SourceError) as raised:
            _scan(spec, tmp_path / "state", monkeypatch, parallel=parallel)
        assert raised.value.line == 1501
        assert ("duplicate key" if duplicate_first else "request.prompt") in str(raised.value)


def test_the_command_prepares_in_parallel(cli, emulator_env, tmp_path, monkeypatch):
    """`python -m batchflow` starts its workers without running the command again in them."""
    _project(tmp_path)
    serial = cli("plan", "p.yaml", env={"BATCHFLOW_PARALLEL_MIN_BYTES": str(10**15)})
    done = subprocess.run(
        [sys.executable, "-m", "batchflow", "plan", "p.yaml"],
        env={**__import__("os").environ, "BATCHFLOW_PARALLEL_MIN_BYTES": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == serial.out and "4 to submit" in done.stdout


def test_a_parallel_output_join_writes_the_same_rows_as_a_serial_one(cli, emulator_env, tmp_path):
    """The output join renders on workers too (keys, hashes and kept columns come back)."""
    spec = _project(tmp_path)
    spec.write_text(SPEC.replace("{uri: out.jsonl}", "{uri: out.jsonl, columns: [name, image, big]}"))
    serial_env = {"BATCHFLOW_PARALLEL_MIN_BYTES": str(10**15)}
    assert cli("apply", "--wait", "p.yaml", env=serial_env).code == 0
    serial = (tmp_path / "out.jsonl").read_bytes()
    (tmp_path / "out.jsonl").unlink()
    done = cli("apply", "p.yaml", env={"BATCHFLOW_PARALLEL_MIN_BYTES": "0"})
    assert done.code == 0 and "output" in done.out, done.out
    assert (tmp_path / "out.jsonl").read_bytes() == serial
    assert (
        b'"name": "thing 7 \xc3\xbcn\xc3\xafcode", "image": "b.png", "big": 1180591620717411303431' in serial
    )


def test_error_rows_of_a_parallel_join_are_those_of_a_serial_one(cli, emulator, emulator_env, tmp_path):
    """Failed jobs, cut answers and a separate errors file: the workers' rows are the serial ones."""
    spec = _project(tmp_path)
    spec.write_text(
        SPEC.replace(
            "output: {uri: out.jsonl}",
            "output: {uri: out.csv, columns: [name]}\n"
            "errors: {uri: errors.jsonl, max_rate: 1.0}\nretry: {attempts: 1}",
        )
    )
    faults = {"job_fail_rate": 0.5, "safety_stop_rate": 0.2, "seed": 3}
    httpx.post(f"{emulator.url}/_emulator/faults", json=faults).raise_for_status()
    assert cli("apply", "--wait", "p.yaml", env={"BATCHFLOW_PARALLEL_MIN_BYTES": str(10**15)}).code == 0
    serial = [(tmp_path / name).read_bytes() for name in ("out.csv", "errors.jsonl")]
    assert b"job " in serial[1] and b"FINISH_REASON" in serial[1]  # both kinds of error row
    error_keys = [json.loads(line)["key"] for line in serial[1].splitlines()]
    said = _output_record(tmp_path)
    assert (said["errors"], said["failed_keys"]) == (len(error_keys), error_keys[:10])
    for name in ("out.csv", "errors.jsonl"):
        (tmp_path / name).unlink()
    assert cli("apply", "p.yaml", env={"BATCHFLOW_PARALLEL_MIN_BYTES": "0"}).code == 0
    assert [(tmp_path / name).read_bytes() for name in ("out.csv", "errors.jsonl")] == serial
    again = _output_record(tmp_path)
    assert (again["records"], again["errors"], again["failed_keys"]) == (
        said["records"],
        said["errors"],
        said["failed_keys"],
    )


def _output_record(project: Path) -> dict:
    """What the state says of the output written last (`status` shows it)."""
    return json.loads((project / "state/p/state.json").read_text())["output"]


def test_a_scan_whose_requests_are_all_covered_still_tells_its_progress(tmp_path, monkeypatch):
    from batchflow.state.store import Shard, ShardStatus

    spec = _project(tmp_path)
    first, _ = _scan(spec, tmp_path / "state", monkeypatch, parallel=False)
    (pipeline,) = load_pipelines([spec])
    state = PipelineState(pipeline="p")
    for info in first.new_shards:
        state.shards[info.id] = Shard(
            id=info.id, requests=info.requests, bytes=info.bytes, status=ShardStatus.SUBMITTED
        )
    told: list[int] = []
    store = LocalStore(tmp_path / "state")
    with contextlib.closing(store.index("p")) as index:
        again = scan(pipeline, state, store, index, write=True, progress=told.append)
    assert again.new_shards == [] and again.requests == first.requests
    assert len(told) > 1 and told[-1] == first.requests  # every chunk, though none had new requests


def _marked(mark: str) -> list[int]:
    """Processes whose environment holds `mark` (batchflow, its fork server, its workers)."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if mark.encode() in environ.read_bytes():
                pids.append(int(environ.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")
def test_a_killed_scan_leaves_no_worker_behind(tmp_path):
    spec = _project(tmp_path, n=60_000)
    mark = f"BATCHFLOW_TEST_MARK={tmp_path.name}"
    env = {**os.environ, "BATCHFLOW_PARALLEL_MIN_BYTES": "0", "BATCHFLOW_TEST_MARK": tmp_path.name}
    command = [sys.executable, "-m", "batchflow", "plan", str(spec)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(_marked(mark)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # batchflow and at least two more: its workers are at work
    assert proc.poll() is None, "the plan ended before it could be killed; give it more records"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _marked(mark) == []
