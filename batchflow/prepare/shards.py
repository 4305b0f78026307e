"""Group rendered requests into shards: content-addressed batch input files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import StateError

# json.dumps(key, ensure_ascii=False) for a str, without json.dumps's cost per call.
_json_string = json.encoder.encode_basestring
KEYS_SUFFIX = ".keys"  # shards/<id>.keys: hash and record key of each line of shards/<id>.jsonl


def _keys_line(digest: str, key: str) -> str:
    return f"{digest}\t{_json_string(key)}\n"


@dataclass(frozen=True)
class ShardInfo:
    id: str  # sha256 of the file's bytes (first 32 hex digits)
    requests: int
    bytes: int


class ShardBuilder:
    """Streams lines into shard files of at most `max_requests` lines.

    Beside each shard, `<id>.keys` lists each line's request hash and record key ("hash\tjson
    key"): the index reads that small file instead of the shard, and it tells, on any machine,
    which answered records changed (the service sees only hashes). With `folder=None` nothing
    is written: `plan` uses that to learn which shards `apply` would make, with the same ids.
    """

    def __init__(
        self,
        max_requests: int,
        max_bytes: int,
        folder: Path | None = None,
        taken: set[str] | None = None,
        on_seal: Callable[[ShardInfo, list[tuple[str, str]]], None] | None = None,
    ) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.folder = folder
        self.taken = set(taken or ())
        self.on_seal = on_seal  # told each shard written, with its (hash, key) rows
        self.shards: list[ShardInfo] = []
        self._reset()

    def _reset(self) -> None:
        self._digest = hashlib.sha256()
        self._count = 0
        self._bytes = 0
        self._files: list[tuple[IO[bytes], str]] = []  # (shard, keys) temporary files being written
        self._rows: list[tuple[str, str]] = []  # (hash, key) of its lines, for on_seal

    def add(self, line: str, key: str, digest: str) -> None:
        data = (line + "\n").encode()
        if self._bytes + len(data) > self.max_bytes:
            self._seal()
        if self.folder is not None and not self._files:
            self.folder.mkdir(parents=True, exist_ok=True)
            for suffix in (".tmp", ".keys.tmp"):
                fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".shard.", suffix=suffix)
                self._files.append((os.fdopen(fd, "wb"), tmp))
        if self._files:
            self._files[0][0].write(data)
            self._files[1][0].write(_keys_line(digest, key).encode())
            if self.on_seal is not None:
                self._rows.append((digest, key))
        self._digest.update(data)
        self._count += 1
        self._bytes += len(data)
        if self._count >= self.max_requests:
            self._seal()

    def add_many(self, lines: Sequence[str], keys: Sequence[str], digests: Sequence[str]) -> None:
        """add() of each line, with one write and one digest update for a run of lines that
        all go into the shard being built (the common case); at the shard's end, one by one."""
        if not lines:
            return
        if self._count + len(lines) < self.max_requests and (self.folder is None or self._files):
            data = ("\n".join(lines) + "\n").encode()
            if self._bytes + len(data) <= self.max_bytes:
                if self._files:
                    self._files[0][0].write(data)
                    self._files[1][0].write("".join(map(_keys_line, digests, keys)).encode())
                    if self.on_seal is not None:
                        self._rows.extend(zip(digests, keys, strict=True))
                self._digest.update(data)
                self._count += len(lines)
                self._bytes += len(data)
                return
        for line, key, digest in zip(lines, keys, digests, strict=True):
            self.add(line, key, digest)

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
        if self._files:
            for f, _ in self._files:
                f.flush()
                os.fsync(f.fileno())
                f.close()
            (_, shard_tmp), (_, keys_tmp) = self._files
            assert self.folder is not None  # files are written only with a folder
            # The keys first: a shard is never without them.
            os.replace(keys_tmp, self.folder / f"{info.id}{KEYS_SUFFIX}")
            os.replace(shard_tmp, self.folder / f"{info.id}.jsonl")
            if self.on_seal is not None:
                self.on_seal(info, self._rows)
        self.shards.append(info)
        self._reset()

    def finish(self) -> list[ShardInfo]:
        self._seal()
        return self.shards

    def abort(self) -> None:
        for f, tmp in self._files:
            f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._reset()


def shard_rows(path: Path) -> Iterator[tuple[str, str | None]]:
    """(request hash, record key) of each line of a shard, from its keys file; for a shard made
    before there were keys files, the hashes from the shard itself and no keys."""
    try:
        with open(path.with_name(path.stem + KEYS_SUFFIX), encoding="utf-8") as f:
            for line in f:
                digest, _, key = line.rstrip("\n").partition("\t")
                yield digest, json.loads(key)
        return
    except FileNotFoundError:
        pass
    try:
        with open(path, "rb") as f:
            for raw in f:
                yield json.loads(raw)["key"], None
    except FileNotFoundError:
        raise StateError(f"shard file {path} is missing from the state store") from None


def build(
    requests: Iterable[tuple[Sequence[str], Sequence[str], Sequence[str]]],
    max_requests: int,
    max_bytes: int,
    folder: Path | None,
    taken: set[str] | None = None,
    on_seal: Callable[[ShardInfo, list[tuple[str, str]]], None] | None = None,
) -> list[ShardInfo]:
    """Shards of `requests`, chunks of (lines, record keys, request hashes)."""
    builder = ShardBuilder(max_requests, max_bytes, folder, taken, on_seal)
    try:
        for lines, keys, digests in requests:
            builder.add_many(lines, keys, digests)
    except BaseException:
        builder.abort()
        raise
    return builder.finish()
