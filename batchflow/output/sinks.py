"""Join results to their records by key and write the output file."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec

from ..errors import OutputError
from ..spec.models import Pipeline
from ..state.atomic import atomic_open
from .columns import CSV_SPREAD, JSON_TEXT, Column, columns_for, fits
from .join import encode_jsonl


@dataclass(frozen=True)
class Layout:
    """The columns of one output, the same in every row and format: `key`, the kept source
    columns, then the result columns the pipeline has (see columns.py)."""

    kept: tuple[str, ...] = ()
    columns: tuple[Column, ...] = ()
    spec: Pipeline | None = None

    @classmethod
    def of(cls, spec: Pipeline) -> Layout:
        return cls(tuple(spec.output.columns), tuple(columns_for(spec)), spec)

    def csv_header(self) -> list[str]:
        names = ["key", *self.kept]
        for c in self.columns:
            names += [f"{c.name}_{k}" for k in CSV_SPREAD[c.name]] if c.name in CSV_SPREAD else [c.name]
        return names


class Sink:
    """An output file being written: rows go in one at a time or by batches; it appears whole
    on close.

    JSONL rows hold only the fields that have a value; CSV and Parquet have every column of
    the layout (CSV with nested values as JSON text, Parquet with typed structs and lists)."""

    def __init__(self, file: IO[bytes], format: str, layout: Layout, uri: str = "the output") -> None:
        self.format = format
        self.uri = uri  # for messages
        self.layout = layout
        self.count = 0
        self._file = file
        self._csv: csv.DictWriter | None = None
        self._text: io.TextIOWrapper | None = None
        self._parquet: Any = None  # a pyarrow ParquetWriter, made with the first row group
        self._types: dict[str, Any] = {}
        # Parquet rows not written yet: as columns (`columns`), each in pieces (lists of values,
        # or Arrow arrays), else as dicts
        self._columns: dict[str, list[Any]] = {name: [] for name in self.columns or ()}
        self._batch: list[dict[str, Any]] = []
        self._pending = 0

    @functools.cached_property
    def columns(self) -> tuple[str, ...] | None:
        """The names of the columns a Parquet sink takes rows by (`write_many` with a list of
        values per column, which Arrow converts faster than dicts and pickles smaller); None
        where it needs dicts: other formats, and columns it retypes row by row."""
        names = ("key", *self.layout.kept, *(c.name for c in self.layout.columns))
        if self.format != "parquet" or len(set(names)) < len(names) or self._retypes:
            return None
        return names

    @functools.cached_property
    def _retypes(self) -> bool:
        """Whether the layout has a column _for_parquet changes."""
        return not _RETYPED.isdisjoint([*self.layout.kept, *(c.name for c in self.layout.columns)])

    def write(self, row: dict[str, Any] | bytes) -> None:
        """One row: a dict, or for JSONL its line as join.encode_jsonl gives it."""
        if self.format == "parquet":
            self.write_many([row], 1)
            return
        self.count += 1
        if self.format == "jsonl":
            self._file.write(row if isinstance(row, bytes) else encode_jsonl(row))
        else:
            if self._csv is None:
                self._text = io.TextIOWrapper(self._file, encoding="utf-8", newline="", write_through=True)
                self._csv = csv.DictWriter(
                    self._text, fieldnames=self.layout.csv_header(), extrasaction="ignore"
                )
                self._csv.writeheader()
            assert isinstance(row, dict)  # lines come only for JSONL
            self._csv.writerow(_flatten(row))

    def write_many(self, rows: bytes | list[Any] | dict[str, list[Any]], count: int) -> None:
        """`count` rows: dicts, for JSONL their lines as one bytes object, or for Parquet a
        list of values per column (`columns`)."""
        if isinstance(rows, bytes):
            self.count += count
            self._file.write(rows)
        elif self.format == "parquet":
            self.count += count
            if self.columns is None:
                assert isinstance(rows, list)  # by dicts: the join gives what `columns` asks
                self._batch.extend(rows)
            else:
                for name, pieces in self._columns.items():
                    pieces.append(rows[name] if isinstance(rows, dict) else [r.get(name) for r in rows])
            self._pending += count
            while self._pending >= PARQUET_BATCH:  # row groups of PARQUET_BATCH rows
                self._write_parquet(PARQUET_BATCH)
        else:
            assert isinstance(rows, list)
            for row in rows:
                self.write(row)

    def _write_parquet(self, n: int) -> None:
        """The first `n` rows not written yet, as one row group."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pending -= n
        rows = None
        if self.columns is None:
            rows, self._batch = self._batch[:n], self._batch[n:]
        if self._parquet is None:
            if rows is None:
                first = {k: _first(self._columns[k], n) for k in self.layout.kept}
            else:
                first = {k: [r.get(k) for r in rows] for k in self.layout.kept}
            schema = self._parquet_schema(first)
            self._types = {f.name: f.type for f in schema}
            self._parquet = pq.ParquetWriter(self._file, schema)
        if rows is None:
            part = {name: self._take(name, n) for name in self._columns}
            table = pa.Table.from_pydict(part, schema=self._parquet.schema)
        else:
            if self._retypes:
                rows = [self._for_parquet(r) for r in rows]
            with _one_type(self.uri, None):
                table = pa.Table.from_pylist(rows, schema=self._parquet.schema)
        self._parquet.write_table(table)

    def _take(self, name: str, n: int):
        """A column's first `n` values not written yet, as an Arrow array of its type (the
        join's workers send some columns so, which costs this process no conversion)."""
        import pyarrow as pa

        kind = self._types[name]
        pieces = self._columns[name]
        with _one_type(self.uri, name):
            whole = pa.concat_arrays(
                [p if isinstance(p, pa.Array) else pa.array(p, type=kind) for p in pieces]
            )
        self._columns[name] = [whole.slice(n)] if len(whole) > n else []
        return whole.slice(0, n)

    def _parquet_schema(self, first: dict[str, list[Any]]):
        """One schema for the whole file: result columns have fixed types (from the spec);
        source columns take the type of their first values (`first`: those of each)."""
        import pyarrow as pa

        fields = [pa.field("key", pa.string())]
        for name in self.layout.kept:
            with _one_type(self.uri, name):
                kind = pa.array(first[name]).type
            fields.append(pa.field(name, pa.string() if pa.types.is_null(kind) else kind))
        spec = self.layout.spec
        fields += [pa.field(c.name, c.arrow(spec)) for c in self.layout.columns if spec is not None]
        return pa.schema(fields)

    def _for_parquet(self, row: dict[str, Any]) -> dict[str, Any]:
        import pyarrow as pa

        out = dict(row)
        if "json" in out and "json" in self._types:
            kind = self._types["json"]
            if pa.types.is_string(kind):
                out["json"] = json.dumps(out["json"], ensure_ascii=False)
            elif not fits(out["json"], kind):
                out["json"] = None  # an answer off its schema: its text is in `text`
        if out.get("function_calls"):
            out["function_calls"] = [
                {"name": c["name"], "args": json.dumps(c["args"], ensure_ascii=False)}
                for c in out["function_calls"]
            ]
        for name in JSON_TEXT:
            if out.get(name) is not None:
                out[name] = json.dumps(out[name], ensure_ascii=False)
        return out

    def abandon(self) -> None:
        """Let go of a file that will not appear: a Parquet writer left open would write its
        footer when collected, to a file closed by then (an error printed at exit)."""
        if self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()
            self._parquet = None

    def finish(self) -> None:
        if self.format == "parquet":
            if self._pending:
                self._write_parquet(self._pending)
            if self._parquet is not None:
                self._parquet.close()
        if self._text is not None:
            self._text.flush()
            self._text.detach()  # the file itself is closed by its atomic writer


# Rows per Parquet row group: bounded memory whatever the output's size.
PARQUET_BATCH = 10_000
# The columns _for_parquet changes; a layout without them writes its rows as they come.
_RETYPED = {"json", "function_calls", *JSON_TEXT}


@contextlib.contextmanager
def _one_type(uri: str, column: str | None) -> Iterator[None]:
    """A Parquet column takes values of one type: a source column whose values differ (text
    here, numbers there; lists of mixed items) is the user's to fix, said in one line."""
    import pyarrow as pa

    try:
        yield
    except pa.ArrowException as exc:
        which = f"column {column!r}" if column else "a column"
        raise OutputError(
            f"{uri}: {which} cannot be written to Parquet: {_first_line(exc)} (its values must be "
            "of one type; write JSONL or CSV, or leave the field out of output.columns)"
        ) from None


def _first(pieces: list, n: int) -> list[Any]:
    """The first `n` values of a column's pieces, as Python values."""
    values: list[Any] = []
    for piece in pieces:
        if len(values) >= n:
            break
        values.extend(piece if isinstance(piece, list) else piece.to_pylist())
    return values[:n]


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict) and key in CSV_SPREAD:
            for sub, v in value.items():
                flat[f"{key}_{sub}"] = v
        elif isinstance(value, dict | list):
            flat[key] = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, bool):
            flat[key] = "true" if value else "false"  # as JSON and the json column spell them
        else:
            flat[key] = value
    return flat


@contextlib.contextmanager
def open_sink(uri: str, format: str, layout: Layout) -> Iterator[Sink]:
    """A Sink whose file appears only if the block ends without error."""
    with _atomic_open(uri) as f:
        sink = Sink(f, format, layout, uri)
        try:
            yield sink
            sink.finish()
        except BaseException:
            sink.abandon()
            raise


OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def output_format(uri: str, declared: str | None) -> str | None:
    """The declared format, else the one the extension says; None when it says none."""
    return declared or OUTPUT_FORMATS.get(Path(uri).suffix.lower())


@contextlib.contextmanager
def _atomic_open(uri: str) -> Iterator[IO[bytes]]:
    if "://" in uri and not uri.startswith("file://"):
        # Object stores publish an object only when its upload completes.
        with fsspec.open(uri, "wb") as f:
            yield f
    else:
        with atomic_open(Path(uri.removeprefix("file://"))) as f:
            yield f


def check_writable(uri: str, *, probe: bool) -> None:
    """Raise OutputError if `uri` cannot be written, before any request is paid for.

    Local paths are checked without writing. Buckets are checked with a probe
    object written and deleted next to the output when `probe` (apply), and by
    the bucket's existence alone otherwise (plan writes nothing)."""
    if "://" not in uri or uri.startswith("file://"):
        _check_local(Path(uri.removeprefix("file://")))
        return
    fs, path = fsspec.core.url_to_fs(uri)
    folder = path.rsplit("/", 1)[0] if "/" in path else path
    try:
        if not probe:
            if not fs.exists(folder.split("/", 1)[0]):
                raise OutputError(f"{uri}: the bucket does not exist")
            return
        marker = f"{folder}/.batchflow-probe-{uuid.uuid4().hex}"
        fs.pipe_file(marker, b"")
        fs.rm_file(marker)
    except OutputError:
        raise
    except Exception as exc:  # each object store raises its own types for a refusal
        raise OutputError(f"{uri}: cannot write there: {_first_line(exc)}") from None


def _check_local(path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot be created, {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"{path}: cannot write there (permission denied in {folder})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
