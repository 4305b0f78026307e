"""The output join: each rendered record's row, from its result line or from the error that
left it without one. The same Joiner runs in this process (small sources) or in the workers of
parallel.py (large ones), so both give the same rows."""

from __future__ import annotations

import functools
import json
import json.encoder
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from ..prepare.render import Rendered
from ..spec.models import Pipeline
from ..state.index import RequestIndex, chunks, parse_result
from ..state.store import ErrorInfo, Shard, state_word
from .columns import USAGE_FIELDS, ResultFields, columns_for, usage_of

# (is an error row, record key, the row: a dict, JSONL bytes when encoded, or the values of
# RowForm.columns_out)
JoinedRow = tuple[bool, str, "dict[str, Any] | bytes | tuple"]
FAILED_KEYS_KEPT = 10  # error rows' keys named in the state, for `status`
# A record as the join needs it: (key, request hash, the record's data)
Keyed = tuple[str, str, dict[str, Any]]


@dataclass
class JoinedBatch:
    """Consecutive rows of the output join, ready for the sinks. A worker's batch crosses as a
    few objects, where a tuple per row cost pickling, unpickling and a Python step each in the
    process that writes (a third of its time)."""

    out: bytes | list[dict[str, Any]] | dict[str, list[Any]]  # the output's rows: JSONL lines,
    # dicts, or the values of each column its sink takes them by (sinks.Sink.columns)
    out_rows: int
    err: bytes | list[dict[str, Any]]  # the errors file's rows, when it has one (else in `out`)
    err_rows: int
    errors: int  # error rows, wherever they go
    failed_keys: list[str]  # the keys of the first FAILED_KEYS_KEPT of them


@dataclass(frozen=True)
class RowForm:
    """The form the output's and errors file's sinks take rows in."""

    encode_out: bool = False  # the output's rows as JSONL lines (workers encode them)
    encode_err: bool = False  # the error rows' likewise
    apart: bool = False  # error rows go to a file of their own
    columns_out: tuple[str, ...] | None = None  # the output's rows by column, these (Sink.columns)


def keyed(rendered: Iterable[Rendered]) -> Iterator[Keyed]:
    return ((r.key, r.hash, r.record.data) for r in rendered)


class ResultReader:
    """Reads result lines by (shard, byte offset), keeping one file open at a time."""

    def __init__(self, path_of: Callable[[str], Path], *, exact: bool = False) -> None:
        """`exact`: parse with json, for outputs that carry the service's JSON as it came."""
        self.path_of = path_of
        self._loads = json.loads if exact else parse_result
        self._shard: str | None = None
        self._file: IO[bytes] | None = None

    def get(self, shard: str, offset: int) -> dict[str, Any]:
        return self._loads(self._seek(shard, offset).readline())

    def run(self, shard: str, offset: int, hashes: list[str]) -> Iterator[dict[str, Any]]:
        """The result lines from `offset` on, as long as each is that of the next of `hashes`
        (a result line's key is its request's hash): read in turn, where `get` seeks to each.
        Given one at a time, to be done with before the next: results held at once were most
        of the garbage collector's work."""
        lines = iter(self._seek(shard, offset))
        for digest in hashes:
            line = next(lines, b"")
            while line and not line.strip():  # blank lines, which indexing skips as well
                line = next(lines, b"")
            if not line:
                return
            result = self._loads(line)
            if result.get("key") != digest:
                return
            yield result

    def _seek(self, shard: str, offset: int) -> IO[bytes]:
        if shard != self._shard or self._file is None:
            self.close()
            self._file, self._shard = open(self.path_of(shard), "rb"), shard
        self._file.seek(offset)
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._shard = None, None


class Joiner:
    """Rows for chunks of rendered records. `failed` holds the shards whose jobs failed for
    good: their requests' rows say why. `form`: as the sinks take them (workers encode, so the
    writing process only writes)."""

    def __init__(
        self,
        spec: Pipeline,
        index: RequestIndex,
        path_of: Callable[[str], Path],
        failed: dict[str, Shard],
        form: RowForm = RowForm(),
        unreplaced: frozenset[str] = frozenset(),
    ) -> None:
        """`unreplaced`: shards whose every result line is its request's latest result
        (RequestIndex.result_shards)."""
        self.fields = ResultFields(spec)
        self.unreplaced = unreplaced
        self.reader = ResultReader(path_of, exact=self.fields.verbatim)
        self.columns = tuple(spec.output.columns)
        self.index = index
        self.failed = failed
        self.form = form
        self.encode = {False: form.encode_out, True: form.encode_err}
        # Result columns (their type fixed by the spec) go to the Parquet sink as Arrow arrays:
        # converted here, on the workers, they cross as a few buffers, not a dict a row.
        self._arrow = _arrow_columns(spec) if form.columns_out is not None else {}
        # Plain answers' rows made in one step, as the sink takes them (AnswerLine, AnswerRow).
        self.line: Callable[[str, dict[str, Any], dict[str, Any]], Any] | None = None
        plain = ("key", *self.columns, *AnswerLine.FIELDS)
        if AnswerLine.takes(self.fields, self.columns):
            if form.encode_out:
                self.line = AnswerLine(self.fields, self.columns)
            elif form.columns_out in (plain, (*plain, "error")):
                self.line = AnswerRow(self.fields, self.columns, error=form.columns_out[-1] == "error")

    def batches(self, records: Iterator[Keyed]) -> Iterator[JoinedBatch]:
        return map(self.batch, chunks(records))

    def batch(self, records: Iterable[Keyed]) -> JoinedBatch:
        """The rows of `records`, sorted into their files, JSONL lines joined into one."""
        rows = [row for chunk in chunks(records) for row in self.join(chunk)]
        errors = [key for is_error, key, _ in rows if is_error]
        if self.form.apart:
            out = [row for is_error, _, row in rows if not is_error]
            err = [row for is_error, _, row in rows if is_error]
        else:
            out, err = [row for _, _, row in rows], []
        count = len(out)
        rows_out: bytes | list[dict[str, Any]] | dict[str, list[Any]]
        if (names := self.form.columns_out) is not None:  # each row a tuple of their values (_add)
            values = list(map(list, zip(*out, strict=True))) or [[] for _ in names]
            rows_out = dict(zip(names, values, strict=True))
            for name, kind in self._arrow.items():
                rows_out[name] = kind(rows_out[name])
        else:
            rows_out = _joined(out)
        return JoinedBatch(rows_out, count, _joined(err), len(err), len(errors), errors[:FAILED_KEYS_KEPT])

    def join(self, chunk: list[Keyed]) -> list[JoinedRow]:
        out: list[JoinedRow] = []
        line = self.line
        for (key, _, data), result in zip(chunk, self._results(chunk), strict=True):
            if line is not None and (row := line(key, data, result)) is not None:
                out.append((False, key, row))  # a plain answer, in one step
            else:
                self._add(out, key, data, self.fields(result))
        return out

    def _results(self, chunk: list[Keyed]) -> Iterator[dict[str, Any]]:
        """Each record's result line, in order; for a record left without one, the error of
        the job that failed for good (as a result line has an error)."""
        hashes = [digest for _, digest, _ in chunk]
        done = 0
        for result in self._run(hashes):
            yield result
            done += 1
        rest = hashes[done:]
        if not rest:
            return
        found = self.index.results(rest)
        lost = self.index.shards_of([h for h in rest if h not in found], set(self.failed))
        for digest in rest:
            if digest in found:
                yield self.reader.get(*found[digest])
            else:
                yield {"error": job_error(self.failed.get(lost.get(digest, "")))}

    def _run(self, hashes: list[str]) -> Iterator[dict[str, Any]]:
        """The results of the first of `hashes`, read in turn from where the first one is, as
        far as its shard has them in the same order: one lookup for the run, where looking up
        each request was the largest cost of a row. Shards hold requests in the source's order
        and the emulator answers in theirs; the service does not promise to (a line out of
        order ends the run, and the rest of the chunk is looked up)."""
        if not self.unreplaced:
            return iter(())
        start = self.index.results(hashes[:1]).get(hashes[0])
        if start is None or start[0] not in self.unreplaced:
            return iter(())
        return self.reader.run(*start, hashes)

    def _add(self, out: list[JoinedRow], key: str, data: dict[str, Any], fields: dict[str, Any]) -> None:
        """The row of a record, from its result's fields."""
        row = {"key": key, **{c: data.get(c) for c in self.columns}}
        row.update(fields)
        is_error = "error" in row
        if self.encode[is_error]:
            out.append((is_error, key, encode_jsonl(row)))
        elif self.form.columns_out is not None and not (is_error and self.form.apart):
            out.append((is_error, key, tuple(map(row.get, self.form.columns_out))))
        else:
            out.append((is_error, key, row))

    def close(self) -> None:
        self.reader.close()


def _row_encoder() -> Callable[[Any], str]:
    """json.dumps(row, ensure_ascii=False), made once: the C encoder json.dumps builds anew
    for every call, without the check for circular references a row never needs. That work
    around the encoding was a third of encoding a row. (orjson would be faster still, but
    writes no spaces: every output line would change.)"""
    standard = json.JSONEncoder(ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return standard.encode
    try:
        # The arguments of JSONEncoder.iterencode's own call, for ensure_ascii=False.
        encode = make(
            None, standard.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
        )
    except TypeError:  # a Python whose C encoder takes other arguments: json.dumps's way
        return standard.encode
    return lambda row: "".join(encode(row, 0))


_encode = _row_encoder()


def encode_jsonl(row: dict[str, Any]) -> bytes:
    """One JSONL output line: json.dumps(row, ensure_ascii=False) and a newline."""
    return _encode(row).encode() + b"\n"


_INT, _TEXT = {int}, {str, type(None)}


class AnswerLine:
    """encode_jsonl's line for the row most outputs are made of, an answer with no more than
    `text`, `finish_reason` and `usage` (ResultFields.answer), in a third of the time: no
    row's dict, and a template made once, filled with each string as orjson encodes it (the
    same bytes as json's, checked over every character). None for any other row, or a value
    of another type: encode_jsonl writes it."""

    FIELDS = ("text", "finish_reason", "usage")

    @classmethod
    def takes(cls, fields: ResultFields, columns: tuple[str, ...]) -> bool:
        """A plain pipeline's, whose kept columns are each a column of their own: none repeats
        or is named as one of the row's other fields (that row's dict would have fewer keys)."""
        return (
            fields.plain
            and len(set(columns)) == len(columns)
            and not {"key", "error", *cls.FIELDS} & set(columns)
        )

    def __init__(self, fields: ResultFields, columns: tuple[str, ...]) -> None:
        self.answer = fields.answer
        self.columns = columns
        names = ("key", *columns, "text", "finish_reason")
        counts = ", ".join(f"{_encode(name)}: %d" for name in USAGE_FIELDS)
        template = ", ".join(f"{_encode(name).replace('%', '%%')}: %b" for name in names)
        self.template = ("{" + template + f', "usage": {{{counts}}}}}\n').encode()

    def __call__(self, key: str, data: dict[str, Any], result: dict[str, Any]) -> bytes | None:
        answer = self.answer(result)
        if answer is None:
            return None
        text, reason, counts = answer
        if not _INT.issuperset(map(type, counts)):
            return None  # a float or a bool would print otherwise with %d
        values = [key, *map(data.get, self.columns), text, reason]
        if not _TEXT.issuperset(map(type, values)):
            return None  # numbers, lists, objects: orjson's spacing and floats are not json's
        try:
            return self.template % (*map(orjson.dumps, values), *counts)
        except TypeError:  # a lone surrogate, which orjson refuses
            return None


class AnswerRow:
    """A plain answer's row as the values of the Parquet sink's columns (Sink.columns), in one
    step where a dict was made and then read back column by column: key, kept columns, text,
    finish_reason, usage, and error unless error rows go to a file of their own."""

    def __init__(self, fields: ResultFields, columns: tuple[str, ...], *, error: bool = True) -> None:
        self.answer = fields.answer
        self.columns = columns
        self.tail = (None,) if error else ()

    def __call__(self, key: str, data: dict[str, Any], result: dict[str, Any]) -> tuple | None:
        answer = self.answer(result)
        if answer is None:
            return None
        text, reason, counts = answer
        return (key, *map(data.get, self.columns), text, reason, usage_of(counts), *self.tail)


def _arrow_columns(spec: Pipeline) -> dict[str, Callable[[list], Any]]:
    """For each result column, what makes an Arrow array of its type from a list of values."""
    import pyarrow as pa

    return {c.name: functools.partial(pa.array, type=c.arrow(spec)) for c in columns_for(spec)}


def _joined(rows: list) -> bytes | list[dict[str, Any]]:
    """Encoded rows as one bytes object (one write, one object to pickle); dicts as they are."""
    return b"".join(rows) if rows and type(rows[0]) is bytes else rows


NO_RESULT = "no result"  # the error of a request with no answer and no failed job: not answered yet


def unanswered(row: dict[str, Any]) -> bool:
    """Whether a joined row is one whose request has no answer yet (the join's "no result",
    which a request whose job failed for good never gets)."""
    error = row.get("error")
    return isinstance(error, dict) and error.get("code") is None and error.get("message") == NO_RESULT


def job_error(shard: Shard | None) -> dict:
    """The error row of a request whose job failed for good: the service's code, status and message."""
    if shard is None:
        return {"code": None, "status": None, "message": NO_RESULT}
    error = shard.error or ErrorInfo()
    why = f"job {shard.job_name} ended {state_word(shard.job_state)}"
    message = f"{error.message} ({why})" if error.message else why
    return {"code": error.code, "status": error.status, "message": message}
