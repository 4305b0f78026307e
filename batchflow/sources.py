"""Stream records from local files, gs:// or s3:// (through fsspec), one at a time."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec

from .errors import SourceError

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "text"}


@dataclass(frozen=True)
class Record:
    uri: str  # the file it came from (a glob expands to several)
    line: int  # 1-based line (for csv: the data row's line, header is line 1)
    data: dict[str, Any]


def infer_format(uri: str) -> str | None:
    lowered = uri.lower()
    for suffix, fmt in _FORMATS.items():
        if lowered.endswith(suffix) or lowered.endswith(suffix + ".gz"):
            return fmt
    return None


def read_records(uri: str, format: str | None = None) -> Iterator[Record]:
    """Yield the records of every file matching `uri`, in file-name order."""
    try:
        files = fsspec.open_files(uri, mode="rb", compression="infer")
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot open source: {exc}", uri=uri) from None
    if not files:
        raise SourceError("no file matches the source uri", uri=uri)
    for of in sorted(files, key=lambda f: f.path):
        name = of.full_name if hasattr(of, "full_name") else of.path
        fmt = format or infer_format(of.path)
        if fmt is None:
            raise SourceError("cannot tell the format from the extension; set source.format", uri=name)
        try:
            with of as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                yield from _READERS[fmt](text, name)
        except FileNotFoundError:
            raise SourceError("file not found", uri=name) from None
        except UnicodeDecodeError as exc:
            raise SourceError(f"not UTF-8 text: {exc.reason}", uri=name) from None


def _jsonl(text: io.TextIOBase, uri: str) -> Iterator[Record]:
    for n, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise SourceError(f"invalid JSON: {exc}", uri=uri, line=n) from None
        if not isinstance(data, dict):
            raise SourceError("each line must be a JSON object", uri=uri, line=n)
        yield Record(uri, n, data)


def _csv(text: io.TextIOBase, uri: str) -> Iterator[Record]:
    reader = csv.DictReader(text)
    for row in reader:
        if None in row:
            raise SourceError("row has more fields than the header", uri=uri, line=reader.line_num)
        yield Record(uri, reader.line_num, dict(row))


def _text(text: io.TextIOBase, uri: str) -> Iterator[Record]:
    for n, line in enumerate(text, 1):
        line = line.rstrip("\r\n")
        if line.strip():
            yield Record(uri, n, {"text": line})


_READERS = {"jsonl": _jsonl, "csv": _csv, "text": _text}
