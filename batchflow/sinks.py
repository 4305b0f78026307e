"""Join results to their records by key and write the output file."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import fsspec

from .atomic import atomic_open
from .errors import OutputError


class ResultReader:
    """Reads result lines by (shard, byte offset), keeping one file open at a time."""

    def __init__(self, path_of: Callable[[str], Path]) -> None:
        self.path_of = path_of
        self._shard: str | None = None
        self._file: IO[bytes] | None = None

    def get(self, shard: str, offset: int) -> dict[str, Any]:
        if shard != self._shard:
            self.close()
            self._file, self._shard = open(self.path_of(shard), "rb"), shard
        self._file.seek(offset)
        return json.loads(self._file.readline())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._shard = None, None


def summarize(result: dict[str, Any], *, parse_json: bool) -> dict[str, Any]:
    """The output fields for one result line of the Batch API."""
    if "error" in result:
        err = result["error"] or {}
        return {
            "error": {"code": err.get("code"), "status": err.get("status"), "message": err.get("message")}
        }
    response = result.get("response") or {}
    if "embedding" in response:
        return {"embedding": (response["embedding"] or {}).get("values", [])}
    candidates = response.get("candidates") or []
    first = candidates[0] if candidates else {}
    parts = (first.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
    usage = response.get("usageMetadata") or {}
    out: dict[str, Any] = {
        "text": text,
        "finish_reason": first.get("finishReason"),
        "usage": {
            "prompt_tokens": usage.get("promptTokenCount", 0),
            "output_tokens": usage.get("candidatesTokenCount", 0),
            "cached_tokens": usage.get("cachedContentTokenCount", 0),
            "total_tokens": usage.get("totalTokenCount", 0),
        },
    }
    if parse_json:
        with contextlib.suppress(ValueError):
            out["json"] = json.loads(text)
    return out


class Sink:
    """An output file being written: rows go in one at a time; it appears whole on close."""

    def __init__(self, file: IO[bytes], format: str) -> None:
        self.format = format
        self.count = 0
        self._file = file
        self._csv: csv.DictWriter | None = None
        self._text: io.TextIOWrapper | None = None
        self._parquet = None
        self._batch: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.count += 1
        if self.format == "jsonl":
            self._file.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        elif self.format == "csv":
            flat = _flatten(row)
            if self._csv is None:
                self._text = io.TextIOWrapper(self._file, encoding="utf-8", newline="", write_through=True)
                self._csv = csv.DictWriter(self._text, fieldnames=list(flat), extrasaction="ignore")
                self._csv.writeheader()
            self._csv.writerow(flat)
        else:
            self._batch.append(row)
            if len(self._batch) >= PARQUET_BATCH:
                self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._batch:
            return
        rows = [
            {**r, "json": json.dumps(r["json"], ensure_ascii=False)} if "json" in r else r
            for r in self._batch
        ]
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._file, _parquet_schema(rows))
        table = pa.Table.from_pylist(rows, schema=self._parquet.schema)
        self._parquet.write_table(table)
        self._batch = []

    def finish(self) -> None:
        if self.format == "parquet":
            self._flush_parquet()
            if self._parquet is not None:
                self._parquet.close()
        if self._text is not None:
            self._text.flush()
            self._text.detach()  # the file itself is closed by its atomic writer


def _parquet_schema(rows: list[dict[str, Any]]):
    """One schema for the whole file, whatever the first rows hold: the result fields have fixed
    types (`json` as JSON text, since answers need not share a shape); source columns take the
    type of their first values."""
    import pyarrow as pa

    tokens = pa.struct(
        [(k, pa.int64()) for k in ("prompt_tokens", "output_tokens", "cached_tokens", "total_tokens")]
    )
    fixed = {
        "text": pa.string(),
        "finish_reason": pa.string(),
        "usage": tokens,
        "json": pa.string(),
        "embedding": pa.list_(pa.float64()),
        "error": pa.struct([("code", pa.int64()), ("status", pa.string()), ("message", pa.string())]),
    }
    fields = [pa.field("key", pa.string())]
    for name in rows[0]:
        if name != "key" and name not in fixed:
            kind = pa.array([r.get(name) for r in rows]).type
            fields.append(pa.field(name, pa.string() if pa.types.is_null(kind) else kind))
    return pa.schema(fields + [pa.field(k, t) for k, t in fixed.items()])


# Rows per Parquet row group: bounded memory whatever the output's size.
PARQUET_BATCH = 10_000
# CSV columns for the fields every generation row has, so that a first row with an error
# does not decide a header that leaves them out.
_CSV_COLUMNS = [
    "text",
    "finish_reason",
    "usage_prompt_tokens",
    "usage_output_tokens",
    "usage_cached_tokens",
    "usage_total_tokens",
    "json",
    "embedding",
    "error_code",
    "error_status",
    "error_message",
]


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict) and key in ("usage", "error"):
            for sub, v in value.items():
                flat[f"{key}_{sub}"] = v
        elif isinstance(value, dict | list):
            flat[key] = json.dumps(value, ensure_ascii=False)
        else:
            flat[key] = value
    leading = [k for k in flat if k not in _CSV_COLUMNS]
    return {k: flat.get(k) for k in leading + _CSV_COLUMNS}


@contextlib.contextmanager
def open_sink(uri: str, format: str) -> Iterator[Sink]:
    """A Sink whose file appears only if the block ends without error."""
    with _atomic_open(uri) as f:
        sink = Sink(f, format)
        yield sink
        sink.finish()


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
