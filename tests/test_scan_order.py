"""The scan order (order.py): once a full scan has rendered the source, results arriving cost no
render, and the output join takes each record's key and hash from the order file, writing
exactly what rendering again would write."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest
from conftest import write

from batchflow.prepare import order
from batchflow.prepare import render as requests

SPEC = """
    version: 1
    name: ord
    model: gemini-3.8-flash
    source: {uri: data.jsonl, key: "{{ sku }}"}
    request: {prompt: "Describe {{ title }}"}
    retry: {attempts: 1}
    output: {uri: out.jsonl, columns: [title, tags]}
    errors: {uri: failed.jsonl, max_rate: 1}
"""


def _lines(n: int) -> str:
    return "".join(
        json.dumps({"sku": f"S{i}", "title": f"Thé {i}", "tags": ["a", i], "price": i / 3}) + "\n"
        for i in range(n)
    )


@pytest.fixture
def renders(monkeypatch):
    """The records rendered, by scans and joins alike."""
    seen = []
    original = requests.Renderer.render

    def counted(self, records, *args, **kwargs):
        for r in original(self, records, *args, **kwargs):
            seen.append(r.key)
            yield r

    def counted_plain(self, datas):
        done = plain(self, datas)
        seen.extend(done[0] if done is not None else [])
        return done

    plain = requests.Renderer.render_plain
    monkeypatch.setattr(requests.Renderer, "render", counted)
    monkeypatch.setattr(requests.Renderer, "render_plain", counted_plain)
    return seen


def _order_files(tmp_path):
    return sorted((tmp_path / "state/ord" / order.FOLDER).iterdir())


@pytest.mark.parametrize("workers", [False, True], ids=["serial", "workers"])
def test_results_arriving_render_nothing_and_the_join_writes_the_same(
    cli, emulator, emulator_env, tmp_path, renders, monkeypatch, workers
):
    if workers:
        monkeypatch.setenv("BATCHFLOW_PARALLEL_MIN_BYTES", "0")
    write(tmp_path / "pipelines/ord.yaml", SPEC)
    write(tmp_path / "pipelines/data.jsonl", _lines(1200))
    emulator.store.clock.set_speed(1)  # the job stays at work
    assert cli("apply").code == 0
    assert len(_order_files(tmp_path)) == 1
    httpx.post(
        f"{emulator.url}/_emulator/faults", json={"line_error_rate": 0.1, "seed": 3}
    ).raise_for_status()
    emulator.store.clock.advance(3600)
    renders.clear()
    done = cli("apply")
    assert done.code == 0, done.err
    assert "1200 records" in done.out
    # The results came (some of them errors, attempts spent): the scan that found nothing left
    # to send, and the output join, took every key and hash from the order file.
    if not workers:  # workers would render in processes of their own, not counted here
        assert renders == []
    out, failed = (
        (tmp_path / "pipelines/out.jsonl").read_bytes(),
        (tmp_path / "pipelines/failed.jsonl").read_bytes(),
    )
    assert failed and out

    # Without the order file, the join renders every record again, and writes the same bytes.
    for path in _order_files(tmp_path):
        path.unlink()
    (tmp_path / "pipelines/out.jsonl").unlink()
    assert cli("apply").code == 0
    assert (tmp_path / "pipelines/out.jsonl").read_bytes() == out
    assert (tmp_path / "pipelines/failed.jsonl").read_bytes() == failed


def test_a_new_output_format_renders_nothing_again(cli, emulator_env, tmp_path, renders):
    """Where results go is no part of the requests: the order file of the last scan serves the
    next output as it is (and a changed prompt still renders everything)."""
    import pyarrow.parquet as pq

    write(tmp_path / "pipelines/ord.yaml", SPEC)
    write(tmp_path / "pipelines/data.jsonl", _lines(300))
    assert cli("apply", "--wait").code == 0
    rows = [json.loads(line) for line in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    (before,) = _order_files(tmp_path)
    write(
        tmp_path / "pipelines/ord.yaml",
        SPEC.replace("out.jsonl", "out.parquet")
        .replace("max_rate: 1", "max_count: 5")
        .replace(", tags]", "]"),
    )
    renders.clear()
    planned = cli("plan")
    assert planned.code == 0 and "write 300 records to out.parquet" in planned.out, planned.out
    done = cli("apply")
    assert done.code == 0, done.err
    assert renders == [] and _order_files(tmp_path) == [before]
    written = pq.read_table(tmp_path / "pipelines/out.parquet").to_pylist()
    assert [(r["key"], r["title"], r["text"]) for r in written] == [
        (r["key"], r["title"], r["text"]) for r in rows
    ]
    assert "output" not in cli("plan").out

    write(tmp_path / "pipelines/ord.yaml", SPEC.replace("Describe", "Summarize"))
    assert cli("plan").code == 0 and len(renders) == 300


def test_the_order_file_of_an_earlier_batchflow_serves_the_join(cli, emulator_env, tmp_path, renders):
    """It was named by every input, the output settings included, and its memo had no name
    for the requests alone."""
    write(tmp_path / "pipelines/ord.yaml", SPEC)
    write(tmp_path / "pipelines/data.jsonl", _lines(300))
    assert cli("apply", "--wait").code == 0
    out = (tmp_path / "pipelines/out.jsonl").read_bytes()
    state_file = tmp_path / "state/ord/state.json"
    state = json.loads(state_file.read_text())
    memo = state["scan_memo"]
    (path,) = _order_files(tmp_path)
    assert path.stem == memo.pop("requested")
    path.rename(path.with_name(f"{memo['inputs']}.jsonl"))
    state_file.write_text(json.dumps(state))
    (tmp_path / "pipelines/out.jsonl").unlink()
    renders.clear()
    assert cli("apply").code == 0
    assert renders == [] and (tmp_path / "pipelines/out.jsonl").read_bytes() == out


@pytest.mark.parametrize("change", ["shorter", "longer"])
@pytest.mark.parametrize("workers", [False, True], ids=["serial", "workers"])
def test_an_order_file_that_disagrees_with_the_source_is_dropped(
    cli, emulator_env, tmp_path, monkeypatch, workers, change
):
    """A source changed without its stamp changing (size and mtime kept) no longer matches its
    order file: the join stops before writing anything, and the next apply renders instead."""
    if workers:
        monkeypatch.setenv("BATCHFLOW_PARALLEL_MIN_BYTES", "0")
    write(tmp_path / "pipelines/ord.yaml", SPEC)
    write(tmp_path / "pipelines/data.jsonl", _lines(2500))
    assert cli("apply", "--wait").code == 0
    out = (tmp_path / "pipelines/out.jsonl").read_bytes()
    (path,) = _order_files(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1] if change == "shorter" else [*lines, lines[-1]]))
    (tmp_path / "pipelines/out.jsonl").unlink()

    stopped = cli("apply")
    assert stopped.code == 1
    assert stopped.err.strip().endswith(
        "data.jsonl: the source changed while the output was being written; run apply again "
        "(pipelines/ord.yaml)"
    ), stopped.err
    assert not (tmp_path / "pipelines/out.jsonl").exists() and not path.exists()
    assert cli("apply").code == 0
    assert (tmp_path / "pipelines/out.jsonl").read_bytes() == out


def test_an_order_file_appears_only_whole(tmp_path):
    with pytest.raises(KeyError):
        with order.recording(tmp_path, "abc") as keep:
            keep(["k1"], ["h1"])
            raise KeyError("the scan failed")
    assert order.find(tmp_path, "abc") is None
    assert list((tmp_path / order.FOLDER).iterdir()) == []

    (tmp_path / order.FOLDER / ".old.1.part").write_bytes(b"left by a crash")
    with order.recording(tmp_path, "old") as keep:
        keep(["k0"], ["h0"])
    with order.recording(tmp_path, "new") as keep:
        keep(("k1", "k2"), ("h1", "h2"))
        keep(["k3"], ["h3"])
    assert order.find(tmp_path, "old") is None
    assert [p.name for p in (tmp_path / order.FOLDER).iterdir()] == ["new.jsonl"]
    cursor = order.Cursor(order.find(tmp_path, "new"))
    assert cursor.take(2) == (["k1", "k2"], ["h1", "h2"])
    assert not cursor.done()
    assert cursor.take(5) == (["k3"], ["h3"])
    assert cursor.done()
