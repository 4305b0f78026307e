"""State documents, locks and the local state store.

Layout of a store (default `.batchflow/`):

    <pipeline>/state.json          the PipelineState document, replaced atomically
    <pipeline>/lock                held by the apply that is acting on the pipeline
    <pipeline>/shards/<id>.jsonl   batch input files, content-addressed
    <pipeline>/shards/<id>.keys    the hash and record key of each of its lines (index, re-billing)
    <pipeline>/results/<id>.jsonl  result files downloaded from the service
    <pipeline>/index.sqlite3       which shard holds each request, where its result is
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import fsspec
from pydantic import BaseModel, ValidationError, field_validator

from ..errors import StateError
from ..lazy import Lazy
from ..prepare.shards import KEYS_SUFFIX, shard_rows
from ..spec.matrix import storage_name
from ..spec.models import DEFAULT_ERROR_FINISH_REASONS
from .atomic import atomic_open, write_atomic
from .conditional import BucketObject, Conflict, LocalFile, Version
from .index import RequestIndex
from .lease import Held, acquire

STATE_VERSION = 1
DEFAULT_LOCK_TTL = 300.0  # seconds; BATCHFLOW_LOCK_TTL
# Job states after which a job does nothing more (the SDK's names).
JOB_ENDED = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"})
# Ended jobs whose results are downloaded whatever they hold (a cancelled one keeps its answers).
ANSWERED = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_CANCELLED"})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def state_word(job_state: str | None) -> str:
    """A job state as a word: JOB_STATE_SUCCEEDED is "succeeded"."""
    return (job_state or "unknown").removeprefix("JOB_STATE_").lower()


class ShardStatus(StrEnum):
    PREPARED = "prepared"  # input file written locally
    UPLOADED = "uploaded"  # input file uploaded; no job yet
    CREATING = "creating"  # a create call was sent; the job may or may not exist
    SUBMITTED = "submitted"  # the job exists; see job_state
    DONE = "done"  # results downloaded into the result store
    FAILED = "failed"  # the job failed, expired or was cancelled


# google.rpc.Code numbers, as a failed job's `error.code` carries them, to their names.
_RPC_STATUS = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


class ErrorInfo(BaseModel):
    """What the service said about a failure: kept as it said it, for the output's error rows."""

    code: int | None = None
    status: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, code: int | None, message: str | None, status: str | None = None) -> ErrorInfo:
        return cls(code=code, status=status or _RPC_STATUS.get(code or 0), message=message)


class Shard(BaseModel):
    id: str
    requests: int
    bytes: int
    status: ShardStatus = ShardStatus.PREPARED
    inline: bool = False  # sent as inline requests (no input file; results come with the job)
    tier: str | None = None  # sent as generateContent calls on this tier (flex), not as a job
    attempt: int = 1
    round: int = 0  # the pipeline's retry round when it was made (see PipelineState.retry_round)
    file_name: str | None = None  # the uploaded input file, files/...
    job_name: str | None = None  # batches/...
    job_state: str | None = None  # JOB_STATE_*
    result_file: str | None = None  # files/... on the service
    error: ErrorInfo | None = None  # why its job failed, as the service said
    submitted_at: str | None = None  # when its job was created (batch.pending_timeout counts from it)
    cancelled_pending: bool = False  # its job was cancelled for pending past batch.pending_timeout
    # None of its requests is in the spec any more: its job was cancelled (or it was never sent).
    superseded: bool = False
    model: str | None = None  # the model it was made for (the spec's may change since)
    quota_refused_at: str | None = None  # its last create was answered 429 (enqueued-token quota)
    usage: dict[str, int] = {}  # tokens of the results: prompt, output, cached
    updated_at: str = ""

    @field_validator("error", mode="before")
    @classmethod
    def _old_error(cls, value):
        return {"message": value} if isinstance(value, str) else value  # state written by 0.1


class OutputRecord(BaseModel):
    uri: str
    digest: str  # what was written: the ordered request hashes and the output settings
    results: str = ""  # which results it was written from (see reconcile.results_fingerprint)
    records: int
    errors: int
    failed_keys: list[str] = []  # the first few keys of error rows, for `status`
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


class ScanMemo(BaseModel):
    """What the last full scan read and found: while its inputs and the state's results are the
    same, the source need not be rendered again (a poll costs what the state says)."""

    inputs: str  # sha256 of the spec as loaded, the source files' stamps and the named files'
    requested: str | None = None  # the same without the output and errors settings (the order file's name)
    results: str  # results_fingerprint of the state the scan saw
    round: int
    requests: int
    digest: str
    superseded: list[str] = []  # shards in flight that no request of these inputs is in


class PipelineState(BaseModel):
    version: int = STATE_VERSION
    pipeline: str
    shards: dict[str, Shard] = {}
    blobs: dict[str, Blob] = {}  # by sha256 of the content
    cache: CacheRecord | None = None
    output: OutputRecord | None = None
    records: int | None = None  # records in the source when apply last read it
    # Raised by `apply --retry-errors`: results and failed jobs of earlier rounds no longer
    # count as final, so their requests are sent again with a new set of attempts.
    retry_round: int = 0
    scan_memo: ScanMemo | None = None
    # Random, made with the state: names what this store makes on the service (see display_name).
    lineage: str | None = None
    updated_at: str = ""

    def adopt_lineage(self) -> bool:
        """Give a state of an earlier batchflow its lineage, once no create of its awaits adoption
        under the old names; True if it changed."""
        if self.lineage is not None or any(s.status is ShardStatus.CREATING for s in self.shards.values()):
            return False
        self.lineage = new_lineage()
        return True


def new_lineage() -> str:
    return uuid.uuid4().hex[:8]


class StateStore(Protocol):
    """Where pipelines' states live: a local folder (`LocalStore`) or a bucket (`RemoteStore`,
    through a local mirror). Shards, results and the index are files in `folder`; a remote
    store uploads them with `save` and `fetch`es them on demand."""

    root: Path
    lock_ttl: float
    lock_timeout: float

    def folder(self, pipeline: str) -> Path: ...
    def shard_path(self, pipeline: str, shard_id: str) -> Path: ...
    def result_path(self, pipeline: str, shard_id: str) -> Path: ...
    def index_path(self, pipeline: str) -> Path: ...
    def index(self, pipeline: str, *, readonly: bool = False) -> RequestIndex: ...
    def fetch(self, path: Path) -> Path:
        """The local copy of a file of the store (a remote one is downloaded if missing)."""
        ...

    def keep(self, path: Path) -> None:
        """Make a file of the store that is still growing durable now (flex answers as they come)."""
        ...

    def load(self, pipeline: str) -> PipelineState: ...
    def save(self, state: PipelineState) -> None:
        """Write the state, refused (LockedError) when this runner's lease was taken over."""
        ...

    def confirm(self, pipeline: str) -> None:
        """Renew the lease now, fenced: raises when it is no longer this runner's."""
        ...

    def lock(self, pipeline: str, say: Callable[[str], None] = ...) -> AbstractContextManager[None]: ...
    def unlock(self, pipeline: str) -> bool: ...
    def forget(self, pipeline: str) -> None: ...


class LocalStore:
    """A state store in a local folder: atomic renames and exclusive-create locks."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.lock_ttl = DEFAULT_LOCK_TTL  # seconds a lease lasts unless renewed
        self.lock_timeout = 0.0  # seconds to wait for a lock another apply holds
        self._leases: dict[str, Held] = {}

    def folder(self, pipeline: str) -> Path:
        return self.root / storage_name(pipeline)

    def shard_path(self, pipeline: str, shard_id: str) -> Path:
        return self.folder(pipeline) / "shards" / f"{shard_id}.jsonl"

    def result_path(self, pipeline: str, shard_id: str) -> Path:
        return self.folder(pipeline) / "results" / f"{shard_id}.jsonl"

    def index(self, pipeline: str, *, readonly: bool = False) -> RequestIndex:
        return RequestIndex(self.index_path(pipeline), readonly=readonly)

    def index_path(self, pipeline: str) -> Path:
        return self.folder(pipeline) / "index.sqlite3"

    def fetch(self, path: Path) -> Path:
        """`path` (a shard, keys or result file of the store), present locally to be read."""
        return path

    def keep(self, path: Path) -> None:
        pass  # its writer flushed and synced it

    def load(self, pipeline: str) -> PipelineState:
        path = self.folder(pipeline) / "state.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return PipelineState(pipeline=pipeline, lineage=new_lineage())
        try:
            state = PipelineState.model_validate_json(text)
        except ValidationError as exc:
            raise StateError(f"{path}: state document is damaged: {exc.errors()[0]['msg']}") from None
        if state.version > STATE_VERSION:
            raise StateError(f"{path}: written by a newer batchflow (state version {state.version})")
        return state

    def save(self, state: PipelineState) -> None:
        held = self._leases.get(state.pipeline)
        if held is not None:
            held.check()  # a holder whose lease ran out writes nothing more
        state.updated_at = now()
        write_atomic(self.folder(state.pipeline) / "state.json", state.model_dump_json(indent=2).encode())

    def confirm(self, pipeline: str) -> None:
        """Before a side effect on the service: the lease is still ours (see lease.py)."""
        held = self._leases.get(pipeline)
        if held is not None:
            held.confirm()

    def lock_file(self, pipeline: str) -> LocalFile | BucketObject:
        return LocalFile(self.folder(pipeline) / "lock")

    @contextlib.contextmanager
    def lock(self, pipeline: str, say: Callable[[str], None] = lambda message: None) -> Iterator[None]:
        """Hold the pipeline's lock as a lease, renewed while the block runs (see lease.py);
        `say` hears about a lock taken over from a holder that is gone."""
        held = acquire(
            pipeline, self.lock_file(pipeline), ttl=self.lock_ttl, timeout=self.lock_timeout, say=say
        )
        self._leases[pipeline] = held
        try:
            self._locked(pipeline)
            yield
        finally:
            del self._leases[pipeline]
            held.release()

    def _locked(self, pipeline: str) -> None:
        """Called once the lock is held, before the block runs."""

    def unlock(self, pipeline: str) -> bool:
        """Remove the pipeline's lock, whoever holds it; False if there was none."""
        lock = self.lock_file(pipeline)
        existed = lock.read() is not None
        lock.delete()
        return existed

    def forget(self, pipeline: str) -> None:
        """Remove everything the store holds for the pipeline."""
        shutil.rmtree(self.folder(pipeline), ignore_errors=True)


class RemoteStore(LocalStore):
    """A state store at a gs:// or s3:// URL, worked on through a local mirror.

    The remote copy is the truth. Shard, keys and result files never change once
    written, so each is uploaded once, before the state document that names it;
    state.json is written last. Nothing is downloaded that the command does not
    read: `sync` fetches state.json alone; a shard or result file is fetched the
    first time it is read (`fetch`), and the request index the first time it is
    queried, from the snapshot the last apply left beside the state
    (`index/<sha256 of state.json>.sqlite3`) or, failing that, rebuilt from the
    keys and result files. The lock is an object created only if absent (GCS
    generation and S3 conditional writes).
    """

    def __init__(self, url: str, mirror: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.url)
        if mirror is None:
            cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            mirror = cache / "batchflow" / hashlib.sha256(self.url.encode()).hexdigest()[:16]
        super().__init__(mirror)
        self._held: set[str] = set()
        self._remote_files: dict[str, set[str]] = {}  # pipeline -> "shards/x.jsonl", ... in the bucket
        self._state_version: dict[str, Version | None] = {}  # of the remote state.json this holder read
        self._saved: set[str] = set()  # pipelines whose state this holder wrote
        self._synced: dict[str, str | None] = {}  # the snapshot name of the state last synced

    def _remote(self, pipeline: str, *parts: str) -> str:
        return "/".join([self.base, storage_name(pipeline), *parts])

    def load(self, pipeline: str) -> PipelineState:
        if pipeline not in self._held:  # plan and status read without the lock
            self.sync(pipeline)
        return super().load(pipeline)

    def sync(self, pipeline: str) -> None:
        """Bring the mirror's state document up to date with the remote one."""
        folder = self.folder(pipeline)
        found = self._state_object(pipeline).read()
        remote_state, self._state_version[pipeline] = found if found else (None, None)
        local_state = folder / "state.json"
        current = local_state.read_bytes() if local_state.exists() else None
        if remote_state != current:
            for stale in folder.glob("index.sqlite3*"):
                stale.unlink()  # made again from the new state when first queried
            if remote_state is None:
                local_state.unlink(missing_ok=True)
            else:
                write_atomic(local_state, remote_state)
        # What the remote state names is in the bucket: it was uploaded before the state.
        self._remote_files[pipeline] = _named_files(super().load(pipeline))
        self._synced[pipeline] = f"{self._state_digest(pipeline)}.sqlite3" if remote_state else None

    def fetch(self, path: Path) -> Path:
        if not path.exists():
            relative = path.relative_to(self.root).as_posix()
            with contextlib.suppress(FileNotFoundError):
                with self.fs.open(f"{self.base}/{relative}", "rb") as src, atomic_open(path) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)  # result files can be large: stream
        return path

    def keep(self, path: Path) -> None:
        relative = path.relative_to(self.root).as_posix()
        self.fs.put_file(str(path), f"{self.base}/{relative}")

    def index(self, pipeline: str, *, readonly: bool = False) -> RequestIndex:
        # Opened on first use: a command that never queries it (status, a plan that skips
        # rendering, a lock) never downloads or rebuilds it.
        return Lazy(lambda: self._open_index(pipeline, readonly))  # type: ignore[return-value]

    def _open_index(self, pipeline: str, readonly: bool) -> RequestIndex:
        path = self.index_path(pipeline)
        if not path.exists() and (self.folder(pipeline) / "state.json").exists():
            snapshot = self._remote(pipeline, "index", f"{self._state_digest(pipeline)}.sqlite3")
            try:
                self.fs.get_file(snapshot, str(path.with_suffix(".part")))
                os.replace(path.with_suffix(".part"), path)
            except FileNotFoundError:
                rebuild_index(self, super().load(pipeline))
        return RequestIndex(path, readonly=readonly)

    def _state_digest(self, pipeline: str) -> str:
        return hashlib.sha256((self.folder(pipeline) / "state.json").read_bytes()).hexdigest()

    def save(self, state: PipelineState) -> None:
        folder = self.folder(state.pipeline)
        uploaded = self._remote_files.setdefault(state.pipeline, set())
        for name in sorted(_named_files(state) - uploaded):
            if (folder / name).exists():  # (shards made before keys files have none)
                self.fs.put_file(str(folder / name), self._remote(state.pipeline, name))
            uploaded.add(name)
        super().save(state)
        # Fenced: written only over the state.json this holder read (or wrote) last, so a holder
        # that lost its lease to another apply cannot overwrite what that one wrote since.
        data = (folder / "state.json").read_bytes()
        target, version = self._state_object(state.pipeline), self._state_version.get(state.pipeline)
        try:
            new = target.create(data) if version is None else target.replace(data, version)
        except Conflict:
            raise StateError(
                f"{target.where} changed since this apply read it: another apply holds "
                f"{state.pipeline!r} now; stopping without writing"
            ) from None
        self._state_version[state.pipeline] = new
        self._saved.add(state.pipeline)

    def _snapshot(self, pipeline: str) -> None:
        """Leave the request index beside the state it matches, for the next runner; older
        snapshots go. Named by the state's digest, so one that a newer state replaced is never
        taken for the current one."""
        if pipeline not in self._saved:
            return
        path, name = self.index_path(pipeline), f"{self._state_digest(pipeline)}.sqlite3"
        try:
            if path.exists():
                self.fs.put_file(str(path), self._remote(pipeline, "index", name))
            elif synced := self._synced.get(pipeline):  # never opened, so unchanged: the same snapshot
                self.fs.copy(
                    self._remote(pipeline, "index", synced),
                    self._remote(pipeline, "index", name),
                )
        except FileNotFoundError:
            return  # no snapshot to carry over: the next runner rebuilds the index
        with contextlib.suppress(FileNotFoundError):
            for old in self.fs.ls(self._remote(pipeline, "index"), detail=False):
                if not old.endswith("/" + name):
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm_file(old)

    def _state_object(self, pipeline: str) -> BucketObject:
        return BucketObject(self.fs, self._remote(pipeline, "state.json"))

    def lock_file(self, pipeline: str) -> BucketObject:
        return BucketObject(self.fs, self._remote(pipeline, "lock"))

    @contextlib.contextmanager
    def lock(self, pipeline: str, say: Callable[[str], None] = lambda message: None) -> Iterator[None]:
        try:
            with super().lock(pipeline, say):
                yield
                self._snapshot(pipeline)  # still under the lease; the index is closed by now
        finally:
            self._held.discard(pipeline)
            self._saved.discard(pipeline)

    def _locked(self, pipeline: str) -> None:
        self._held.add(pipeline)
        self.sync(pipeline)

    def forget(self, pipeline: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._remote(pipeline), recursive=True)
        super().forget(pipeline)


def _named_files(state: PipelineState) -> set[str]:
    """The files of the store that a state document names: each shard with its keys, and the
    results of each shard that has them."""
    names = set()
    for shard in state.shards.values():
        names |= {f"shards/{shard.id}.jsonl", f"shards/{shard.id}{KEYS_SUFFIX}"}
        if shard.status is ShardStatus.DONE:
            names.add(f"results/{shard.id}.jsonl")
    return names


def open_store(location: str) -> StateStore:
    """The state store at a folder or a gs:// / s3:// URL."""
    return RemoteStore(location) if "://" in location else LocalStore(location)


def rebuild_index(store: StateStore, state: PipelineState) -> None:
    """The request index from the keys (or shard) and result files the state names."""
    name = state.pipeline
    with contextlib.closing(RequestIndex(store.index_path(name))) as index:
        for shard in state.shards.values():
            path = store.shard_path(name, shard.id)
            if not store.fetch(path.with_name(path.stem + KEYS_SUFFIX)).exists():
                store.fetch(path)  # made before keys files: the hashes are in the shard itself
            index.add_shard(shard.id, shard_rows(path))
            if shard.status is ShardStatus.DONE:
                # (the spec is not at hand here: its errors.finish_reasons are taken as the default)
                index.add_results(
                    shard.id,
                    store.fetch(store.result_path(name, shard.id)),
                    shard.round,
                    frozenset(DEFAULT_ERROR_FINISH_REASONS),
                )
