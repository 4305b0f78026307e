"""Join results to their records by key and write the output file."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import fsspec

from .atomic import atomic_open

ResultIndex = dict[str, tuple[Path, int]]


def index_results(files: Iterable[Path]) -> ResultIndex:
    """Where each request hash's result line is: (file, byte offset). Later files win."""
    index: ResultIndex = {}
    for path in files:
        with open(path, "rb") as f:
            offset = 0
            for line in f:
                if line.strip():
                    key = json.loads(line).get("key")
                    if key is not None:
                        index[key] = (path, offset)
                offset += len(line)
    return index


class ResultReader:
    """Reads result lines by their index entry, keeping one file open at a time."""

    def __init__(self, index: ResultIndex) -> None:
        self.index = index
        self._path: Path | None = None
        self._file: IO[bytes] | None = None

    def get(self, digest: str) -> dict[str, Any] | None:
        where = self.index.get(digest)
        if where is None:
            return None
        path, offset = where
        if path != self._path:
            self.close()
            self._file, self._path = open(path, "rb"), path
        self._file.seek(offset)
        return json.loads(self._file.readline())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._path = None, None


def summarize(result: dict[str, Any], *, parse_json: bool) -> dict[str, Any]:
    """The output fields for one result line of the Batch API."""
    if "error" in result:
        err = result["error"] or {}
        return {
            "error": {
                "code": err.get("code"),
                "status": err.get("status"),
                "message": err.get("message"),
            }
        }
    response = result.get("response") or {}
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


def write_jsonl(uri: str, rows: Iterator[dict[str, Any]]) -> int:
    """Write rows as JSONL; readers never see a partial file. Returns the row count."""
    count = 0
    with _atomic_open(uri) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
            count += 1
    return count


@contextlib.contextmanager
def _atomic_open(uri: str) -> Iterator[IO[bytes]]:
    if "://" in uri and not uri.startswith("file://"):
        # Object stores publish an object only when its upload completes.
        with fsspec.open(uri, "wb") as f:
            yield f
    else:
        with atomic_open(Path(uri.removeprefix("file://"))) as f:
            yield f
