"""Stream records from local files, gs:// or s3:// (through fsspec), one at a time."""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import orjson

from ..errors import SourceError

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "text", ".parquet": "parquet"}


@dataclass(slots=True)  # made per record: a frozen one costs 4x as much to build
class Record:
    uri: str  # the file it came from (a glob expands to several)
    line: int  # 1-based line (csv: the row's line, the header being line 1; parquet: the row number)
    data: dict[str, Any]


@dataclass(frozen=True)
class CsvDialect:
    delimiter: str = ","
    quotechar: str = '"'
    encoding: str = "utf-8"
    types: dict[str, str] | None = None  # column -> string | integer | number | boolean


def _reading(encoding: str, fmt: str) -> str:
    """The codec a source is read with. CSV files saved by spreadsheets as UTF-8 start with a
    byte-order mark, which is not part of the first column's name."""
    if fmt != "csv":
        return "utf-8"
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def infer_format(uri: str) -> str | None:
    lowered = uri.lower()
    for suffix, fmt in _FORMATS.items():
        if lowered.endswith(suffix) or lowered.endswith(suffix + ".gz"):
            return fmt
    return None


def read_records(
    uri: str, format: str | None = None, csv_dialect: CsvDialect | None = None
) -> Iterator[Record]:
    """Yield the records of every file matching `uri`, in file-name order."""
    dialect = csv_dialect or CsvDialect()
    try:
        files = fsspec.open_files(uri, mode="rb", compression="infer")
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot open source: {exc}", uri=uri) from None
    if not files:
        raise SourceError("no file matches the source uri", uri=uri)
    for of in sorted(files, key=lambda f: f.path):
        local = "file" in (of.fs.protocol if isinstance(of.fs.protocol, tuple) else (of.fs.protocol,))
        name = of.path if local else of.full_name
        fmt = format or infer_format(of.path)
        if fmt is None:
            raise SourceError("cannot tell the format from the extension; set source.format", uri=name)
        try:
            with of as raw:
                if fmt == "parquet":
                    yield from _parquet(raw, name)
                    continue
                text = io.TextIOWrapper(raw, encoding=_reading(dialect.encoding, fmt), newline="")
                if fmt == "csv":
                    yield from _csv(text, name, dialect)
                else:
                    yield from _READERS[fmt](text, name)
        except FileNotFoundError:
            raise SourceError("file not found", uri=name) from None
        except UnicodeDecodeError as exc:
            if fmt == "csv":
                hint = "; set source.csv.encoding (e.g. latin-1, cp1252, utf-16) to the file's encoding"
                raise SourceError(f"not {dialect.encoding} text: {exc.reason}{hint}", uri=name) from None
            raise SourceError(f"not UTF-8 text: {exc.reason}", uri=name) from None


def stamp(uri: str) -> list[list[Any]]:
    """What tells, without reading them, whether the files matching `uri` changed: each one's
    path and size, with its mtime and inode (local) or its generation / ETag (buckets)."""
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        paths = sorted(fs.glob(path)) if any(c in path for c in "*?[") else [path]
        out = []
        for p in paths:
            info = fs.info(p)
            if "://" in uri and not uri.startswith("file://"):
                keys = ("size", "ETag", "LastModified", "generation", "md5Hash", "updated", "mtime")
                out.append([p, *(str(info.get(k)) for k in keys)])
            else:
                st = os.stat(p)
                out.append([p, st.st_size, st.st_mtime_ns, st.st_ino])
        return out
    except (OSError, ValueError) as exc:  # gone or unreadable: a full scan says what is wrong
        return [[uri, "unreadable", str(exc)]]


def peek_fields(
    uri: str, format: str | None, csv_dialect: CsvDialect | None, records: int = 1000
) -> set[str]:
    """Field names seen in the first `records` records (cheap: stops early)."""
    fields: set[str] = set()
    fixed = (format or infer_format(uri)) in ("csv", "parquet", "text")  # one row tells all the columns
    for n, record in enumerate(read_records(uri, format, csv_dialect)):
        fields.update(record.data)
        if n + 1 >= records or fixed:
            break
    return fields


def _jsonl(text: io.TextIOBase, uri: str) -> Iterator[Record]:
    for n, line in enumerate(text, 1):
        if line.strip():
            yield jsonl_record(line, uri, n)


def jsonl_record(line: str, uri: str, n: int) -> Record:
    """The record on line `n` of a JSONL file (not a blank one)."""
    try:
        data = _parse(line)
    except json.JSONDecodeError as exc:
        # Its own "line 1 column 5 (char 4)" counts within this line: say the column only. A
        # record cut short fails past its end, which json counts from the line's newline on
        # (line 2, column 1): the column is then the one after the record's last character.
        column = min(exc.pos, len(line.rstrip("\r\n"))) + 1
        raise SourceError(f"invalid JSON at column {column}: {exc.msg}", uri=uri, line=n) from None
    if not isinstance(data, dict):
        raise SourceError("each line must be a JSON object", uri=uri, line=n)
    return Record(uri, n, data)


# Bytes as digits or not, to find runs of 19 digits, which any integer beyond 64 bits has: a
# regular expression took ten times as long.
_DIGITS = bytes(ord("0") if chr(b).isdigit() else ord(" ") for b in range(128)) + b" " * 128
_LONG_NUMBER = b"0" * 19


def jsonl_batch(lines: list[str]) -> list[dict[str, Any]] | None:
    """The records' data of JSONL lines (none blank), parsed in one step by orjson when that
    is certainly what `jsonl_record` would read: every line an object and no run of 19 digits
    anywhere (see `_exact`). None otherwise, or on any error: parse line by line."""
    if _LONG_NUMBER in "".join(lines).encode(errors="surrogatepass").translate(_DIGITS):
        return None
    try:
        datas = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return None
    return datas if set(map(type, datas)) <= {dict} else None


def _parse(line: str) -> Any:
    """json.loads(line), by orjson (five times faster) wherever it reads the line exactly as json
    does. What orjson refuses and json reads (NaN, Infinity, lone surrogates) goes to json, and so
    does every error, which keeps json's message."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)
    return data if type(data) is not dict or _exact(data) else json.loads(line)  # not a dict: refused


def _exact(value: dict | list) -> bool:
    """False if a number may be an integer beyond 64 bits, which orjson reads as a float (one
    that renders differently); what is left to json then is rare."""
    for v in value.values() if type(value) is dict else value:
        kind = type(v)
        if (kind is float and abs(v) >= 9.2e18) or ((kind is dict or kind is list) and not _exact(v)):
            return False
    return True


def _csv(text: io.TextIOBase, uri: str, dialect: CsvDialect) -> Iterator[Record]:
    reader = csv.DictReader(text, delimiter=dialect.delimiter, quotechar=dialect.quotechar)
    for row in reader:
        if None in row:
            raise SourceError("row has more fields than the header", uri=uri, line=reader.line_num)
        data = dict(row)
        for column, kind in (dialect.types or {}).items():
            if column in data:
                data[column] = _typed(data[column], kind, column, uri, reader.line_num)
        yield Record(uri, reader.line_num, data)


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _typed(value: str, kind: str, column: str, uri: str, line: int) -> Any:
    """A CSV cell as the type source.csv.types declares; an empty cell is null."""
    if kind == "string":
        return value
    if value.strip() == "":
        return None
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        return _BOOLEANS[value.strip().lower()]
    except (ValueError, KeyError):
        raise SourceError(
            f"{column}: {value!r} is not {'an' if kind == 'integer' else 'a'} {kind} (source.csv.types)",
            uri=uri,
            line=line,
        ) from None


def _text(text: io.TextIOBase, uri: str) -> Iterator[Record]:
    for n, line in enumerate(text, 1):
        line = line.rstrip("\r\n")
        if line.strip():
            yield Record(uri, n, {"text": line})


def _parquet(raw, uri: str) -> Iterator[Record]:
    import pyarrow.parquet as pq  # imported here: only parquet sources pay for it

    try:
        table = pq.ParquetFile(raw)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise SourceError(f"not a Parquet file: {exc}", uri=uri) from None
    n = 0
    for batch in table.iter_batches(batch_size=4096):  # bounded memory, however large the file
        for row in batch.to_pylist():
            n += 1
            yield Record(uri, n, row)


_READERS = {"jsonl": _jsonl, "text": _text}
