"""The request index: results by round (apply --retry-errors), and indexes written by batchflow 0.1."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from batchflow.state import index as index_module
from batchflow.state.index import RequestIndex


def _results(path, lines) -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_errors_of_an_earlier_round_are_sent_again_answers_never(tmp_path):
    index = RequestIndex(tmp_path / "index.sqlite3")
    _results(
        tmp_path / "a.jsonl",
        [{"key": "ok"}, {"key": "bad", "error": {"code": 400}}, {"key": "busy", "error": {"code": 503}}],
    )
    index.add_results("a", tmp_path / "a.jsonl", round=0)
    everything = ["ok", "bad", "busy"]
    assert index.covered(everything, set(), attempts=1, round=0) == {"ok", "bad", "busy"}
    assert index.covered(everything, set(), attempts=1, round=1) == {"ok"}
    # In round 1 the 400 comes back retryable: a new try of the new round, not an answer.
    _results(tmp_path / "b.jsonl", [{"key": "bad", "error": {"code": 503}}, {"key": "busy"}])
    index.add_results("b", tmp_path / "b.jsonl", round=1)
    assert index.covered(everything, set(), attempts=2, round=1) == {"ok", "busy"}
    assert index.covered(everything, set(), attempts=1, round=1) == {"ok", "bad", "busy"}
    assert index.results(["bad"])["bad"] == ("b", 0)


def test_an_index_of_batchflow_0_1_is_read_and_upgraded(tmp_path):
    path = tmp_path / "index.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE results (hash TEXT PRIMARY KEY, shard TEXT NOT NULL, offset INTEGER NOT NULL,"
        " state TEXT NOT NULL, tries INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO results VALUES ('h', 's', 0, 'error', 0);"
    )
    db.commit()
    db.close()
    readonly = RequestIndex(path, readonly=True)  # plan: reads it as round 0, writes nothing
    assert readonly.covered(["h"], set(), attempts=3, round=0) == {"h"}
    assert readonly.covered(["h"], set(), attempts=3, round=1) == set()
    readonly.close()
    index = RequestIndex(path)
    assert index.covered(["h"], set(), attempts=3, round=1) == set()
    index.close()


def test_result_lines_are_read_as_json_reads_them():
    from batchflow.state.index import parse_result

    assert parse_result(b'{"key": "a", "n": 18446744073709551615}\n')["n"] == 2**64 - 1
    assert math.isnan(parse_result(b'{"key": "a", "x": NaN}')["x"])
    assert parse_result('{"key": "é"}'.encode())["key"] == "é"


@pytest.mark.parametrize("in_memory", [10**6, 1, 0], ids=["in memory", "moved to disk", "on disk"])
def test_a_key_seen_in_an_earlier_batch_is_named_where_it_was_first_seen(tmp_path, monkeypatch, in_memory):
    monkeypatch.setattr(index_module, "SEEN_BYTES", in_memory)
    index = RequestIndex(tmp_path / "index.sqlite3")
    assert index.first_seen(["b", "a"], ["x.jsonl"] * 2, [1, 2]) is None
    assert index.first_seen(["c"], ["x.jsonl"], [3]) is None
    assert index.first_seen(["d", "c", "a"], ["y.jsonl"] * 3, [7, 8, 9]) == (1, "x.jsonl", 3)
    index.forget_keys()  # a new scan: nothing seen yet
    assert index.first_seen(["e"], ["y.jsonl"], [8]) is None
    # the first repeat in the batch, whether its key was seen in it or before it
    assert index.first_seen(["a", "d", "a", "e"], ["y.jsonl"] * 4, [9, 10, 11, 12]) == (2, "y.jsonl", 9)
    assert index.first_seen(["f", "e", "f"], ["y.jsonl"] * 3, [13, 14, 15]) == (1, "y.jsonl", 8)


@pytest.mark.parametrize(("size", "in_memory"), [(10, 30), (5_000, 10)])
def test_the_memory_of_the_duplicate_check_is_bounded_in_bytes(tmp_path, monkeypatch, size, in_memory):
    """Whatever the keys' length: long keys go to disk sooner (after the batch that fills it)."""
    monkeypatch.setattr(index_module, "SEEN_BYTES", 10_000)
    index = RequestIndex(tmp_path / "index.sqlite3")
    for n in range(3):
        keys = [f"{n}-{i}-".ljust(size, "x") for i in range(10)]
        assert index.first_seen(keys, ["x.jsonl"] * 10, list(range(10 * n + 1, 10 * n + 11))) is None
    (on_disk,) = index.db.execute("SELECT count(*) FROM temp.seen_keys").fetchone()
    assert (len(index._seen), on_disk) == (in_memory, 30 - in_memory)


def test_an_index_is_opened_on_first_use_only(tmp_path):
    """A memoized plan never queries its index: opening one costs more than the plan's own work."""
    path = tmp_path / "p" / "index.sqlite3"
    unused = RequestIndex(path)
    unused.close()
    assert not path.parent.exists()
    used = RequestIndex(path)
    used.forget_keys()
    used.close()
    assert path.exists()


def test_shards_added_aside_are_all_indexed_when_the_block_ends(tmp_path):
    index = RequestIndex(tmp_path / "index.sqlite3")
    with index.adding_shards() as add:
        for n in range(5):
            add(f"s{n}", [(f"h{n}-{i}", f"k{n}-{i}") for i in range(1000)])
        index.first_seen(["k"], ["x.jsonl"], [1])  # the scan goes on meanwhile, on its own connection
    assert index.shards_of([f"h{n}-999" for n in range(5)], {f"s{n}" for n in range(5)}) == {
        f"h{n}-999": f"s{n}" for n in range(5)
    }


def test_an_error_indexing_a_shard_aside_is_raised_to_the_scan(tmp_path):
    index = RequestIndex(tmp_path / "index.sqlite3")
    with pytest.raises(ValueError), index.adding_shards() as add:
        add("s0", [("h", "k", "too many")])
        add("s1", [("h1", "k1")])
    assert index.shards_of(["h1"], {"s1"}) == {}  # the shard after the bad one was not indexed either


@pytest.mark.parametrize("at_once", [1, 2, 3, 50_000])
def test_results_indexed_together_end_as_indexed_one_by_one(tmp_path, monkeypatch, at_once):
    """add_results gathers rows and indexes them by kind in hash order; whatever it gathers at
    once, the rows end as the file's lines, applied in order, leave them."""
    monkeypatch.setattr(index_module, "RESULTS_AT_ONCE", at_once)
    files = {
        "a": [
            {"key": "z"},
            {"key": "y", "error": {"code": 503}},
            {"key": "x", "error": {"code": 503}},
            {"key": "x", "error": {"code": 503}},  # a request the shard held twice
            {"key": "w", "error": {"code": 503}},
            {"key": "w"},
            {"key": "v"},
            {"key": "v", "error": {"code": 503}},
            {"key": "u", "error": {"code": 400}},
            {"key": "u", "error": {"code": 503}},
        ],
        "b": [{"key": "y", "error": {"code": 503}}, {"key": "u"}, {"key": "z", "error": {"code": 400}}],
    }
    index = RequestIndex(tmp_path / "index.sqlite3")
    for shard, lines in files.items():
        _results(tmp_path / f"{shard}.jsonl", lines)
        index.add_results(shard, tmp_path / f"{shard}.jsonl", round=0)
    index.add_results("a", tmp_path / "a.jsonl", round=0)  # again: indexed once
    rows = sorted(index.db.execute("SELECT hash, shard, state, tries, round FROM results"))
    assert rows == [
        ("u", "b", "ok", 0, 0),
        ("v", "a", "ok", 0, 0),
        ("w", "a", "ok", 0, 0),
        ("x", "a", "retry", 2, 0),
        ("y", "b", "retry", 2, 0),
        ("z", "b", "error", 0, 0),
    ]
    offsets = dict(index.db.execute("SELECT hash, offset FROM results WHERE shard = 'a'"))
    lines = (tmp_path / "a.jsonl").read_bytes().splitlines(keepends=True)
    starts = [sum(map(len, lines[:i])) for i in range(len(lines))]
    assert offsets == {"v": starts[6], "w": starts[5], "x": starts[3]}
    index.close()
