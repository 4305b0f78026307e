"""The output join's shortcuts give the rows of the long way: results read in turn from shards
whose lines were never replaced, and answer lines filled into a template."""

from __future__ import annotations

import functools
import itertools
import json
import random
import sqlite3

import pytest

from batchflow.output.columns import USAGE_FIELDS, ResultFields, usage_of
from batchflow.output.join import AnswerLine, AnswerRow, Joiner, RowForm, encode_jsonl
from batchflow.spec.models import Pipeline
from batchflow.state.index import RequestIndex, chunks
from batchflow.state.store import ErrorInfo, Shard, ShardStatus

SPEC = Pipeline.model_validate(
    {
        "version": 1,
        "name": "p",
        "model": "gemini-3.8-flash",
        "source": {"uri": "in.jsonl", "key": "{{ id }}"},
        "request": {"prompt": "{{ title }}"},
        "output": {"uri": "o.jsonl", "columns": ["title", "n"]},
    }
)


def _answer(key: str, text: str = "") -> dict:
    text = text or f"the answer to {key}"
    usage = {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}
    content = {"parts": [{"text": text}], "role": "model"}
    return {
        "key": key,
        "response": {"candidates": [{"content": content, "finishReason": "STOP"}], "usageMetadata": usage},
    }


def _write(tmp_path, index: RequestIndex, shard: str, lines: list, round: int = 0) -> None:
    path = tmp_path / f"{shard}.jsonl"
    path.write_text("".join(line if isinstance(line, str) else json.dumps(line) + "\n" for line in lines))
    index.add_results(shard, path, round=round)


def _rows(
    tmp_path, index: RequestIndex, records: list, unreplaced: frozenset[str], form: RowForm, one_step=True
) -> list:
    failed = {
        "f": Shard(
            id="f",
            requests=1,
            bytes=1,
            status=ShardStatus.FAILED,
            job_name="f",
            error=ErrorInfo(message="gone"),
        )
    }
    joiner = Joiner(SPEC, index, lambda shard: tmp_path / f"{shard}.jsonl", failed, form, unreplaced)
    if not one_step:  # the reference: every row made field by field (ResultFields), then encoded
        joiner.line = None
    try:
        return [(b.out, b.err, b.errors, b.failed_keys) for b in joiner.batches(iter(records))]
    finally:
        joiner.close()


COLUMNS = ("key", "title", "n", "text", "finish_reason", "usage", "error")
FORMS = {
    "jsonl": RowForm(encode_out=True, encode_err=True),
    "dicts": RowForm(),
    "columns": RowForm(columns_out=COLUMNS),
    "columns, errors apart": RowForm(encode_err=True, apart=True, columns_out=COLUMNS),
}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_results_read_in_turn_give_the_rows_looked_up_one_by_one(tmp_path, monkeypatch, form):
    """Shards in the source's order, one shuffled, one with a line a later round replaced, one
    holding a request twice, blank lines, a failed shard, and records with no result at all."""
    monkeypatch.setattr(
        "batchflow.output.join.chunks", functools.partial(chunks, size=7)
    )  # runs cross chunks
    index = RequestIndex(tmp_path / "index.sqlite3")
    hashes = [f"h{i:03}" for i in range(120)]
    shuffled = [_answer(h) for h in hashes[30:50]]
    random.Random(1).shuffle(shuffled)
    _write(tmp_path, index, "a", [_answer(h, f"é\n{h}") for h in hashes[:30]] + ["\n"])
    _write(tmp_path, index, "b", shuffled)
    _write(
        tmp_path,
        index,
        "c",
        [_answer(h) for h in hashes[50:70]] + [{"key": hashes[60], "error": {"code": 503}}],
    )
    _write(tmp_path, index, "d", [_answer(h) for h in hashes[70:90]])
    _write(
        tmp_path,
        index,
        "e",
        [_answer(hashes[75], "later"), {"key": hashes[95], "error": {"code": 400}}],
        round=1,
    )
    index.db.execute("INSERT INTO shard_requests VALUES (?, 'f')", (hashes[100],))
    shards = index.result_shards(lambda shard: tmp_path / f"{shard}.jsonl")
    # c holds a request twice; d's line for h075 was replaced
    assert shards == {"a": True, "b": True, "c": False, "d": False, "e": True}
    unreplaced = frozenset(shard for shard, whole in shards.items() if whole)
    records = [(f"k{i}", h, {"title": f"t{i}", "n": i if i % 3 else 1.5}) for i, h in enumerate(hashes)]
    records[5][2]["title"] = None
    looked_up = []
    results = index.results
    monkeypatch.setattr(index, "results", lambda hashes: looked_up.append(len(hashes)) or results(hashes))
    fast = _rows(tmp_path, index, records, unreplaced, form)
    # A lookup a chunk (18 of them) to find where its run starts, and a's first 28 rows in runs.
    assert sum(looked_up) <= len(records) + 18 - 28
    looked_up.clear()
    assert fast == _rows(tmp_path, index, records, frozenset(), form)
    assert sum(looked_up) == len(records)
    # The rows made in one step (AnswerLine, AnswerRow) are those made field by field.
    assert fast == _rows(tmp_path, index, records, frozenset(), form, one_step=False)
    index.close()


def test_shards_none_of_whose_lines_was_replaced_are_found_by_one_count(tmp_path):
    index = RequestIndex(tmp_path / "index.sqlite3")
    _write(tmp_path, index, "a", [_answer("x"), "\n", _answer("y")])
    _write(tmp_path, index, "b", [_answer("z")])
    _write(tmp_path, index, "empty", [])
    statements = []
    index.db.set_trace_callback(statements.append)
    assert index.result_shards(lambda shard: tmp_path / f"{shard}.jsonl") == {"a": True, "b": True}
    assert not any("GROUP BY" in statement for statement in statements)
    index.close()


def test_an_index_without_line_counts_is_counted_once_and_upgraded(tmp_path):
    index = RequestIndex(tmp_path / "index.sqlite3")
    _write(tmp_path, index, "a", [_answer("x"), "\n", _answer("y")])
    _write(tmp_path, index, "b", [_answer("x")])
    index.close()
    db = sqlite3.connect(tmp_path / "index.sqlite3")  # as batchflow wrote it before counting lines
    db.executescript(
        "CREATE TABLE old (shard TEXT PRIMARY KEY) WITHOUT ROWID; INSERT INTO old SELECT shard FROM indexed;"
        "DROP TABLE indexed; ALTER TABLE old RENAME TO indexed;"
    )
    db.close()
    index = RequestIndex(tmp_path / "index.sqlite3")
    assert index.result_shards(lambda shard: tmp_path / f"{shard}.jsonl") == {"a": False, "b": True}
    assert dict(index.db.execute("SELECT shard, lines FROM indexed")) == {"a": 2, "b": 1}
    index.close()


def _result(text="t", reason="STOP", usage=None, parts=None, **response) -> dict:
    usage = (
        {"promptTokenCount": 1, "candidatesTokenCount": 2, "totalTokenCount": 3} if usage is None else usage
    )
    content = {"parts": [{"text": text}] if parts is None else parts}
    candidate = {"content": content} if reason is None else {"content": content, "finishReason": reason}
    return {"key": "h", "response": {"candidates": [candidate], "usageMetadata": usage, **response}}


def test_an_answer_line_is_the_line_json_writes():
    fields = ResultFields(SPEC)
    line = AnswerLine(fields, ("title", "n%s", "ünï"))
    texts = ['é\u2028"\\\n\t\x00\x1f\x7f🙂', "", "%s %d %%", None]
    results = [_result(text, reason) for text in texts[:3] for reason in ("STOP", "MAX_TOKENS", None)] + [
        _result(parts=[{"text": "thinking", "thought": True}, {"text": "a"}, {"text": "b"}]),
        _result(parts=[]),
        _result(parts=[{"text": "only a thought", "thought": True}]),
        _result(usage={}),
        _result(usage={"promptTokenCount": 2**70, "cachedContentTokenCount": 5, "thoughtsTokenCount": 1}),
    ]
    names = ("key", "title", "n%s", "ünï", "text", "finish_reason", "usage", "error")
    values = AnswerRow(fields, names[1:4])
    for title, value, result in itertools.product(texts, texts, results):
        data = {"title": title, "n%s": value, "ünï": value}
        row = {"key": "k", **data, **fields(result)}
        assert line("k", data, result) == encode_jsonl(row)
        assert values("k", data, result) == tuple(map(row.get, names))
    assert fields(_result(parts=[{"text": "only a thought", "thought": True}]))["text"] == ""
    assert tuple(usage_of((1, 2, 3, 4, 5))) == USAGE_FIELDS
    others = [  # left to json: numbers, lists, objects, a lone surrogate, another shape of row
        ({"title": 1.5}, _result()),
        ({"title": 2**70}, _result()),
        ({"title": True}, _result()),
        ({"title": ["a", {"b": 1}]}, _result()),
        ({"title": "\ud800"}, _result()),
        ({}, _result("\udc00")),
        ({}, _result(usage={"candidatesTokenCount": 2.0})),
        ({}, _result(usage={"cachedContentTokenCount": True})),
        ({}, _result(reason="SAFETY")),
        ({}, {"key": "h", "error": {"code": 400, "message": "bad"}}),
        ({}, {"key": "h", "response": {"promptFeedback": {"blockReason": "OTHER"}}}),
        ({}, {"key": "h", "response": {}}),
    ]
    for data, result in others:
        assert line("k", data, result) is None
    assert values("k", {}, others[-1][1]) is None
    assert AnswerLine.takes(fields, ("title", "n")) and not AnswerLine.takes(fields, ("title", "title"))
    for name in ("key", "text", "finish_reason", "usage", "error"):
        assert not AnswerLine.takes(fields, (name,))
    structured = {"prompt": "x", "generation_config": {"response_mime_type": "application/json"}}
    spec = Pipeline.model_validate({**SPEC.model_dump(exclude_defaults=True), "request": structured})
    assert not AnswerLine.takes(ResultFields(spec), ())
