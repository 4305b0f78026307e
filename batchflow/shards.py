"""Group rendered requests into shards: content-addressed batch input files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_atomic
from .errors import StateError

KEYS_SUFFIX = ".keys"  # shards/<id>.keys: the record key of each line of shards/<id>.jsonl (JSON lines)


@dataclass(frozen=True)
class ShardInfo:
    id: str  # sha256 of the file's bytes (first 32 hex digits)
    requests: int
    bytes: int


class ShardBuilder:
    """Streams lines into shard files of at most `max_requests` lines.

    With `folder=None` nothing is written: `plan` uses that to learn which
    shards `apply` would make, with the same ids.
    """

    def __init__(
        self, max_requests: int, max_bytes: int, folder: Path | None = None, taken: set[str] | None = None
    ) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.folder = folder
        self.taken = set(taken or ())
        self.shards: list[ShardInfo] = []
        self._reset()

    def _reset(self) -> None:
        self._keys: list[str] = []  # the records' own keys, for the sidecar (one shard's worth)
        self._digest = hashlib.sha256()
        self._count = 0
        self._bytes = 0
        self._file = None
        self._tmp: str | None = None

    def add(self, line: str, key: str) -> None:
        data = (line + "\n").encode()
        if self._bytes + len(data) > self.max_bytes:
            self._seal()
        if self.folder is not None and self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=self.folder, prefix=".shard.", suffix=".tmp")
            self._file = os.fdopen(fd, "wb")
        if self._file is not None:
            self._file.write(data)
            self._keys.append(key)
        self._digest.update(data)
        self._count += 1
        self._bytes += len(data)
        if self._count >= self.max_requests:
            self._seal()

    def _seal(self) -> None:
        if self._count == 0:
            return
        shard_id = self._digest.hexdigest()[:32]
        n = 1
        while shard_id in self.taken:
            # The same lines sent again (their earlier answers were errors): a new shard, a new id.
            shard_id = hashlib.sha256(f"{self._digest.hexdigest()}:{n}".encode()).hexdigest()[:32]
            n += 1
        self.taken.add(shard_id)
        info = ShardInfo(shard_id, self._count, self._bytes)
        if self._file is not None:
            # Beside the shard, not in it (the service sees only request hashes): which record
            # each line is, so `plan` knows, on any machine, which answered records changed.
            write_atomic(
                self.folder / f"{info.id}{KEYS_SUFFIX}",
                "".join(json.dumps(k) + "\n" for k in self._keys).encode(),
            )
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.folder / f"{info.id}.jsonl")
        self.shards.append(info)
        self._reset()

    def finish(self) -> list[ShardInfo]:
        self._seal()
        return self.shards

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
        self._reset()


def record_keys(shard_path: Path) -> Iterator[str]:
    """The records' keys of a shard's lines, in order; none for shards made before batchflow 0.3."""
    try:
        with open(shard_path.with_name(shard_path.stem + KEYS_SUFFIX), "rb") as f:
            for line in f:
                yield json.loads(line)
    except FileNotFoundError:
        return


def shard_keys(path: Path) -> Iterator[str]:
    """The request hashes (line keys) in a shard file."""
    try:
        with open(path, "rb") as f:
            for line in f:
                yield json.loads(line)["key"]
    except FileNotFoundError:
        raise StateError(f"shard file {path} is missing from the state store") from None


def build(
    lines: Iterable[tuple[str, str]],
    max_requests: int,
    max_bytes: int,
    folder: Path | None,
    taken: set[str] | None = None,
) -> list[ShardInfo]:
    builder = ShardBuilder(max_requests, max_bytes, folder, taken)
    try:
        for line, key in lines:
            builder.add(line, key)
    except BaseException:
        builder.abort()
        raise
    return builder.finish()
