"""State documents, locks and the local state store.

Layout of a store (default `.batchflow/`):

    <pipeline>/state.json          the PipelineState document, replaced atomically
    <pipeline>/lock                held by the apply that is acting on the pipeline
    <pipeline>/shards/<id>.jsonl   batch input files, content-addressed
    <pipeline>/results/<id>.jsonl  result files downloaded from the service
    <pipeline>/index.sqlite3       which shard holds each request, where its result is
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ValidationError

from .atomic import write_atomic
from .errors import LockedError, StateError
from .index import RequestIndex

STATE_VERSION = 1


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ShardStatus(StrEnum):
    PREPARED = "prepared"  # input file written locally
    UPLOADED = "uploaded"  # input file uploaded; no job yet
    CREATING = "creating"  # a create call was sent; the job may or may not exist
    SUBMITTED = "submitted"  # the job exists; see job_state
    DONE = "done"  # results downloaded into the result store
    FAILED = "failed"  # the job failed, expired or was cancelled


class Shard(BaseModel):
    id: str
    requests: int
    bytes: int
    status: ShardStatus = ShardStatus.PREPARED
    inline: bool = False  # sent as inline requests (no input file; results come with the job)
    attempt: int = 1
    file_name: str | None = None  # the uploaded input file, files/...
    job_name: str | None = None  # batches/...
    job_state: str | None = None  # JOB_STATE_*
    result_file: str | None = None  # files/... on the service
    error: str | None = None
    usage: dict[str, int] = {}  # tokens of the results: prompt, output, cached
    updated_at: str = ""


class OutputRecord(BaseModel):
    uri: str
    digest: str  # what was written: the ordered request hashes and the output settings
    records: int
    errors: int
    written_at: str


class Blob(BaseModel):
    """A file that requests or the cache refer to, uploaded with the Files API when needed."""

    path: str  # local path or fsspec URL
    mime_type: str
    name: str | None = None  # files/... once uploaded
    uri: str | None = None


class CacheRecord(BaseModel):
    """The context cache this pipeline made, for the cache settings with this digest."""

    digest: str
    body: dict  # contents, systemInstruction, tools (REST form, file placeholders unresolved)
    name: str | None = None  # cachedContents/...


class PipelineState(BaseModel):
    version: int = STATE_VERSION
    pipeline: str
    shards: dict[str, Shard] = {}
    blobs: dict[str, Blob] = {}  # by sha256 of the content
    cache: CacheRecord | None = None
    output: OutputRecord | None = None
    updated_at: str = ""


class LocalStore:
    """A state store in a local folder: atomic renames and exclusive-create locks."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if "://" in str(root):
            raise StateError(
                f"state store {root}: remote state stores are not supported yet; use a local folder"
            )
        self.root = Path(root)

    def folder(self, pipeline: str) -> Path:
        return self.root / pipeline

    def shard_path(self, pipeline: str, shard_id: str) -> Path:
        return self.folder(pipeline) / "shards" / f"{shard_id}.jsonl"

    def result_path(self, pipeline: str, shard_id: str) -> Path:
        return self.folder(pipeline) / "results" / f"{shard_id}.jsonl"

    def index(self, pipeline: str, *, readonly: bool = False) -> RequestIndex:
        return RequestIndex(self.folder(pipeline) / "index.sqlite3", readonly=readonly)

    def load(self, pipeline: str) -> PipelineState:
        path = self.folder(pipeline) / "state.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return PipelineState(pipeline=pipeline)
        try:
            state = PipelineState.model_validate_json(text)
        except ValidationError as exc:
            raise StateError(f"{path}: state document is damaged: {exc.errors()[0]['msg']}") from None
        if state.version > STATE_VERSION:
            raise StateError(f"{path}: written by a newer batchflow (state version {state.version})")
        return state

    def save(self, state: PipelineState) -> None:
        state.updated_at = now()
        write_atomic(self.folder(state.pipeline) / "state.json", state.model_dump_json(indent=2).encode())

    @contextlib.contextmanager
    def lock(self, pipeline: str) -> Iterator[None]:
        """Hold the pipeline's lock; a lock left by a dead process on this host is taken over."""
        path = self.folder(pipeline) / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
        for _ in range(2):
            try:
                with open(path, "x", encoding="utf-8") as f:
                    json.dump(owner, f)
                break
            except FileExistsError:
                holder = _read_lock(path)
                if holder and holder.get("host") == owner["host"] and not _alive(holder.get("pid")):
                    path.unlink(missing_ok=True)
                    continue
                who = (
                    f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
                    if holder
                    else "?"
                )
                raise LockedError(
                    f"pipeline {pipeline!r} is locked by another apply ({who}); "
                    f"wait for it, or remove {path} if that process is gone"
                ) from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # A lock being written right now reads as empty; treat it as held.
        time.sleep(0.05)
        return None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
