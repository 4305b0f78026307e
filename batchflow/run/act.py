"""Reconciling, the acting half: take each pipeline's actions, saving the state after each,
so a run killed anywhere resumes from the last completed step.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec

from ..backends import confirm_model
from ..backends.fenced import fence
from ..errors import BatchflowError, BudgetError, OutputError, RemoteError, SourceError, StateError
from ..output.join import FAILED_KEYS_KEPT, RowForm
from ..output.sinks import Layout, Sink, check_writable, open_sink, output_format
from ..prepare import order
from ..prepare.parallel import join_source
from ..prepare.render import CACHE_PLACEHOLDER, FILE_PLACEHOLDER, cache_digest, canonical, resolve_line
from ..spec.models import LoadedPipeline
from ..spec.pricing import PriceTable, load_prices
from ..spec.project import Stores
from ..spec.units import plural
from ..state.atomic import write_atomic
from ..state.store import (
    ANSWERED,
    Blob,
    CacheRecord,
    OutputRecord,
    PipelineState,
    Shard,
    ShardStatus,
    StateStore,
    now,
    state_word,
)
from .graph import answered, upstream_ready
from .progress import Reporter
from .reconcile import (
    Action,
    Kind,
    Rules,
    Scan,
    cache_title,
    check_shrink,
    display_name,
    file_title,
    next_action,
    order_file,
    output_uris,
    plan,
    policy_breach,
    records,
    results_fingerprint,
    scan,
    source_name,
    superseded_why,
)
from .review import budget_breach, estimate

if TYPE_CHECKING:  # the SDK is imported only by commands that call the API
    from ..backends.base import Backend, Job

_FILE_REF = re.compile(re.escape(FILE_PLACEHOLDER) + r"([0-9a-f]{64})")


@contextlib.contextmanager
def _local_copy(path: str) -> Iterator[Path]:
    """A local path for the SDK to upload: the file itself, or a temporary copy of a gs:// or s3:// one."""
    if "://" not in path:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="batchflow-") as tmp:
        local = Path(tmp) / Path(path).name
        with fsspec.open(path, "rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield local


Report = Callable[[str, Action, str], None]
_PROBED: set[str] = set()  # bucket URIs this process found writable


@dataclass
class Outcome:
    pipeline: str
    actions: int = 0
    waiting: list[str] = field(default_factory=list)  # jobs still running
    blocked: str | None = None  # a stage's upstream is not done: why it waits
    done: bool = False
    failed: str | None = None  # once done: how failed requests break the errors policy, if they do
    error: str | None = None  # why the pipeline stopped: its state, source, outputs or the API
    exception: Exception | None = field(default=None, repr=False)  # the error itself, to catch by kind


class Applier:
    """Takes the actions of one pipeline, saving the state after each."""

    def __init__(
        self,
        pipeline: LoadedPipeline,
        store: StateStore,
        backend: Backend,
        report: Report,
        *,
        allow_shrink: bool = False,
        retry_errors: bool = False,
        max_concurrent_jobs: int | None = None,
        prices: PriceTable | None = None,
        max_usd: float | None = None,
        progress: Reporter | None = None,
    ):
        self.allow_shrink = allow_shrink
        self.progress = progress or Reporter()
        self.prices = prices or load_prices()
        self.max_usd = max_usd  # overrides budget.max_usd
        self.retry_errors = retry_errors
        self.retried = False  # the retry round was raised (once per `apply --retry-errors`)
        self.quota_refused = False  # a create was answered 429 this round: create no more
        self.p = pipeline
        self.store = store
        # Every call that makes or removes something on the service first confirms the lease.
        self.backend = fence(backend, functools.partial(store.confirm, pipeline.name))
        self.report = report
        self.attempts = pipeline.spec.retry.attempts
        # The backend's takes_inline is asked where a shard is made, not here: asking makes it.
        self.rules = Rules.of(pipeline, max_concurrent_jobs=max_concurrent_jobs)
        self.embed = pipeline.spec.embed is not None

    def run(self) -> Outcome:
        self._check_outputs()
        confirm_model(self.p, self.backend)
        took_over = functools.partial(self._say, Action(Kind.ADOPT, None, ""))
        with (
            self.store.lock(self.p.name, took_over),
            contextlib.closing(self.store.index(self.p.name)) as index,
        ):
            self.index = index
            state = self.store.load(self.p.name)
            if state.adopt_lineage():
                self.store.save(state)
            outcome = Outcome(self.p.name)
            if self.retry_errors:
                # Saved before anything is sent: a run killed after this still sends them again.
                state.retry_round += 1
                self.store.save(state)
                self.retried = True
            # Each round submits what the state does not cover yet; a round whose jobs all
            # finished may leave failed requests to send again, bounded by retry.attempts.
            while True:
                s = self._scan(state, index, write=True)
                check_shrink(self.p, state, s, self.allow_shrink)
                if s.new_shards:
                    # Before the state names the new shards: refused, they are never uploaded.
                    if why := budget_breach(self.p, estimate(self.p, s, state, self.prices), self.max_usd):
                        raise BudgetError(why)
                    if s.resent_answered:
                        self._say(
                            Action(Kind.SUBMIT, None, ""),
                            f"{s.resent_answered} answered {plural(s.resent_answered, 'request')} "
                            "changed: sent and paid again",
                        )
                if state.records != s.requests:
                    state.records = s.requests
                    self.store.save(state)
                for digest, ref in s.files.items():
                    state.blobs.setdefault(digest, Blob(path=ref.path, mime_type=ref.mime_type))
                if s.cache is not None:
                    digest = cache_digest(self.p.spec.model, s.cache)
                    if state.cache is None or state.cache.digest != digest:
                        state.cache = CacheRecord(digest=digest, body=s.cache)
                for shard_id in s.superseded:
                    self._supersede(state, state.shards[shard_id])
                flex, _ = self.rules.choose(sum(info.requests for info in s.new_shards))
                for info in s.new_shards:
                    state.shards[info.id] = Shard(
                        id=info.id,
                        round=state.retry_round,
                        requests=info.requests,
                        bytes=info.bytes,
                        model=self.p.spec.model,
                        inline=self.rules.inline(info.bytes, flex) and self.backend.takes_inline,
                        tier=flex,
                        updated_at=now(),
                    )
                    outcome.actions += 1
                    self._say(
                        Action(Kind.SUBMIT, info.id, ""),
                        f"new shard of {info.requests} {plural(info.requests, 'request')}",
                    )
                if s.new_shards or state.scan_memo != s.memo:
                    # The memo is saved with the shards its scan found, never before them: a
                    # memo that outlived a crash before they were saved would hide their requests.
                    state.scan_memo = s.memo
                    self.store.save(state)
                for shard in list(state.shards.values()):
                    self._advance(state, shard, outcome)
                if outcome.waiting or any(next_action(sh, self.attempts) for sh in state.shards.values()):
                    return outcome
                fresh = self._scan(state, index, write=False)
                if not fresh.new_shards:
                    if state.scan_memo != fresh.memo:  # so the next poll need not render
                        state.scan_memo = fresh.memo
                        self.store.save(state)
                    break
            for action in plan(state, fresh, self.rules, self.p.spec.output.uri):
                if action.kind is Kind.OUTPUT:
                    self._write_output(state, fresh, action)
                    outcome.actions += 1
            if state.cache is not None and state.cache.name is not None:
                # Every request has its answer: a cache costs storage for as long as it lives.
                self.backend.delete_cache(state.cache.name)
                self._say(Action(Kind.OUTPUT, None, ""), f"deleted cache {state.cache.name}")
                state.cache.name = None
                self.store.save(state)
            outcome.done = True
            if breach := policy_breach(self.p, state.output):
                rows = self.p.resolve(self.p.spec.errors.uri or self.p.spec.output.uri)
                outcome.failed = f"{breach}; their error rows are in {rows}"
            return outcome

    def _scan(self, state: PipelineState, index, *, write: bool) -> Scan:
        def rendered(count: int) -> None:
            self.progress.render(self.p.name, count, state.records)

        try:
            return scan(self.p, state, self.store, index, write=write, keep_order=True, progress=rendered)
        finally:
            self.progress.render(self.p.name, 0, None, finished=True)

    def _check_outputs(self) -> None:
        """Before anything is uploaded (and paid for): can the results be written where the spec says?
        Buckets are probed once per process, not on every round of --wait."""
        for uri in output_uris(self.p):
            if uri not in _PROBED:
                check_writable(uri, probe=True)
                if "://" in uri:
                    _PROBED.add(uri)

    def _say(self, action: Action, message: str) -> None:
        self.report(self.p.name, action, message)

    def _save(self, state: PipelineState, shard: Shard, **changes) -> None:
        for k, v in changes.items():
            setattr(shard, k, v)
        shard.updated_at = now()
        self.store.save(state)

    def _advance(self, state: PipelineState, shard: Shard, outcome: Outcome) -> None:
        while (action := next_action(shard, self.attempts)) is not None:
            if shard.status is ShardStatus.PREPARED and not shard.tier and self.rules.slots_free(state) == 0:
                outcome.waiting.append(f"shard {shard.id[:8]} (waiting for a job slot)")
                return  # started once a running job ends (batch.max_concurrent_jobs)
            outcome.actions += 1
            match action.kind:
                case Kind.UPLOAD:
                    name = self._upload_shard(state, shard)
                    self._save(state, shard, status=ShardStatus.UPLOADED, file_name=name)
                    self._say(action, f"uploaded as {name}")
                case Kind.CREATE | Kind.ADOPT:
                    job = None
                    if action.kind is Kind.ADOPT:
                        job = self.backend.find(display_name(self.p.name, shard, state.lineage))
                    if job is None:
                        if self.quota_refused:  # asking again in the same round would be refused too
                            outcome.waiting.append(f"shard {shard.id[:8]} (waiting for quota)")
                            return
                        # Recorded before the call: if we die before the answer is saved,
                        # the next run adopts the job by name instead of creating another.
                        self._save(state, shard, status=ShardStatus.CREATING)
                        try:
                            job = self._create(state, shard)
                        except RemoteError as exc:
                            if exc.code != 429:
                                raise
                            # The service's enqueued-token quota: no job was made. The shard
                            # waits and is created on a later round, as running jobs finish.
                            self.quota_refused = True
                            waiting = ShardStatus.UPLOADED if shard.file_name else ShardStatus.PREPARED
                            self._save(state, shard, status=waiting, quota_refused_at=now())
                            self._say(action, "waiting for quota (429 RESOURCE_EXHAUSTED on create)")
                            outcome.waiting.append(f"shard {shard.id[:8]} (waiting for quota)")
                            return
                        self._say(action, f"created {job.name}")
                    else:
                        self._say(action, f"adopted {job.name}")
                    self._record_job(state, shard, job, submitted_at=shard.submitted_at or now())
                case Kind.POLL:
                    assert shard.job_name is not None  # polled only once created
                    job = self.backend.get(shard.job_name)
                    changed = job.state != shard.job_state
                    self._record_job(state, shard, job)
                    if not job.done:
                        self.progress.job(
                            self.p.name, job.name, functools.partial(self.backend.stats, job.name)
                        )
                        self._cancel_if_stuck(state, shard, job)
                        self._keep_cache(state)
                        outcome.waiting.append(job.name)
                        if changed:  # --wait polls for hours: say only what is new
                            self._say(action, state_word(job.state))
                        return
                    self._say(action, state_word(job.state))
                case Kind.DOWNLOAD:
                    path = self.store.result_path(self.p.name, shard.id)
                    if shard.inline:
                        assert shard.job_name is not None
                        self.backend.download_inline(shard.job_name, path)
                    elif shard.result_file:
                        self.backend.download(shard.result_file, path)
                    else:  # cancelled before it answered anything
                        write_atomic(path, b"")
                    if shard.job_state not in ANSWERED and path.stat().st_size == 0:
                        # A failed job that answered nothing: retried as a failed one.
                        self._save(state, shard, status=ShardStatus.FAILED)
                        self._say(action, f"{state_word(shard.job_state)}, nothing answered")
                        return
                    usage = self.index.add_results(
                        shard.id, path, shard.round, frozenset(self.p.spec.errors.finish_reasons)
                    )
                    self._save(state, shard, status=ShardStatus.DONE, usage=usage)
                    self._say(action, f"saved to {path}")
                case Kind.SEND:
                    path = self._send(state, shard)
                    usage = self.index.add_results(
                        shard.id, path, shard.round, frozenset(self.p.spec.errors.finish_reasons)
                    )
                    self._save(state, shard, status=ShardStatus.DONE, usage=usage)
                    self._say(action, f"{shard.requests} answered on the {shard.tier} tier, saved to {path}")
                case Kind.RETRY:
                    self._save(
                        state,
                        shard,
                        status=ShardStatus.PREPARED,
                        attempt=shard.attempt + 1,
                        round=state.retry_round,
                        file_name=None,
                        job_name=None,
                        job_state=None,
                        result_file=None,
                        error=None,
                        submitted_at=None,
                        cancelled_pending=False,
                    )
                    self._say(action, f"queued again (attempt {shard.attempt} of {self.attempts})")

    def _send(self, state: PipelineState, shard: Shard) -> Path:
        """A flex shard's requests as generateContent calls, `flex.concurrency` at once. Each
        answer is appended to `<result>.part` as it arrives (flushed; synced and kept in the
        store at least every second), so a killed apply loses at most the calls in flight, and
        the next one sends only the requests with no answer there. The lease is confirmed before
        every `4 x concurrency` calls and after any second without: a runner taken over sends
        nothing more."""
        path = self.store.result_path(self.p.name, shard.id)
        part = self.store.fetch(path.with_name(path.name + ".part"))
        part.parent.mkdir(parents=True, exist_ok=True)
        answered = _answered_keys(part)
        text = self.store.fetch(self.store.shard_path(self.p.name, shard.id)).read_text(encoding="utf-8")
        lines = [json.loads(line) for line in self._resolve(state, text).splitlines() if line.strip()]
        todo = [line for line in lines if line["key"] not in answered]
        model, tier = self.p.spec.model, shard.tier or "flex"
        at_once = self.p.spec.flex.concurrency

        def call(line: dict[str, Any]) -> tuple[bytes, int]:
            answer, served, calls = self.backend.generate(model, line["request"], tier)
            result = {"key": line["key"], **answer, "tier": served or tier}
            return json.dumps(result, ensure_ascii=False).encode() + b"\n", calls - 1

        waiting = iter(todo)
        with ThreadPoolExecutor(at_once) as pool, open(part, "ab") as out:
            in_flight: set[Future[tuple[bytes, int]]] = set()
            sent, kept, retried, total = 0, time.monotonic(), 0, len(lines)
            confirmed = kept
            while True:
                # A window, not rounds: a slow or retried call holds up no other.
                while len(in_flight) < at_once and (line := next(waiting, None)) is not None:
                    # A runner paused past its lease (and taken over) learns it before its next
                    # call: a pause shows as time gone since the last confirmation.
                    if sent % (at_once * 4) == 0 or time.monotonic() - confirmed > 1.0:
                        self.store.confirm(self.p.name)
                        confirmed = time.monotonic()
                    in_flight.add(pool.submit(call, line))
                    sent += 1
                if not in_flight:
                    break
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                if time.monotonic() - confirmed > 1.0:  # paused? then another may own the file now
                    self.store.confirm(self.p.name)
                    confirmed = time.monotonic()
                for future in done:
                    result, again = future.result()
                    out.write(result)
                    retried += again
                out.flush()
                answered_now = total - len(todo) + sent - len(in_flight)
                self.progress.calls(self.p.name, (answered_now, total, len(in_flight), retried))
                if time.monotonic() - kept > 1.0 or not in_flight:
                    os.fsync(out.fileno())
                    self.store.keep(part)
                    kept = time.monotonic()
        self.progress.calls(self.p.name, (total, total, 0, retried), finished=True)
        os.replace(part, path)
        return path

    def _create(self, state: PipelineState, shard: Shard) -> Job:
        name = display_name(self.p.name, shard, state.lineage)
        if shard.inline:
            text = self._resolve(
                state,
                self.store.fetch(self.store.shard_path(self.p.name, shard.id)).read_text(encoding="utf-8"),
            )
            lines = [json.loads(line) for line in text.splitlines()]
            return self.backend.create_inline(
                self.p.spec.model, [(x["key"], x["request"]) for x in lines], name
            )
        assert shard.file_name is not None  # created only once uploaded
        try:
            return self.backend.create(self.p.spec.model, shard.file_name, name, embed=self.embed)
        except RemoteError as exc:
            if (
                exc.code in (400, 403, 404)
                and shard.file_name
                and not self.backend.file_exists(shard.file_name)
            ):
                # The service deletes uploads after about 48 hours: upload again.
                self._save(state, shard, status=ShardStatus.PREPARED, file_name=None)
                uploaded = self._upload_shard(state, shard)
                self._save(state, shard, status=ShardStatus.CREATING, file_name=uploaded)
                return self.backend.create(self.p.spec.model, uploaded, name, embed=self.embed)
            raise

    def _upload_shard(self, state: PipelineState, shard: Shard) -> str:
        """Upload a shard's input file, with the names of its files and cache filled in."""
        path = self.store.fetch(self.store.shard_path(self.p.name, shard.id))
        text = path.read_text(encoding="utf-8")
        if "batchflow://" not in text:
            return self.backend.upload(path, display_name(self.p.name, shard, state.lineage))
        resolved = path.with_name(path.name + ".resolved")
        try:
            resolved.write_text(self._resolve(state, text), encoding="utf-8")
            return self.backend.upload(resolved, display_name(self.p.name, shard, state.lineage))
        finally:
            resolved.unlink(missing_ok=True)

    def _resolve(self, state: PipelineState, text: str) -> str:
        """Swap the placeholders in shard lines for uploaded files' URIs and the cache's name."""
        if "batchflow://" not in text:
            return text
        names = self._file_names(state, set(_FILE_REF.findall(text)))
        if CACHE_PLACEHOLDER in text and state.cache is not None:
            names[CACHE_PLACEHOLDER + state.cache.digest] = self._cache_name(state, names)
        return "".join(resolve_line(line, names) for line in text.splitlines(True))

    def _file_names(self, state: PipelineState, digests: set[str]) -> dict[str, str]:
        """Placeholder -> URI of each file, uploading those the service does not hold (again)."""
        names = {}
        for digest in sorted(digests):
            blob = state.blobs.get(digest)
            if blob is None:
                raise StateError(f"{self.p.name}: no record of file {digest[:12]}; run apply again")
            if blob.name is None or not self.backend.file_exists(blob.name):
                if self.backend.reads_in_place(blob.path):
                    blob.name = blob.uri = blob.path
                else:
                    with _local_copy(blob.path) as local:
                        blob.name, blob.uri = self.backend.upload_file(
                            local, blob.mime_type, file_title(self.p.name, state, digest)
                        )
                    self._say(Action(Kind.UPLOAD, None, ""), f"uploaded {blob.path} as {blob.name}")
                self.store.save(state)
            assert blob.uri is not None
            names[FILE_PLACEHOLDER + digest] = blob.uri
        return names

    def _cache_name(self, state: PipelineState, names: dict[str, str]) -> str:
        cache, spec = state.cache, self.p.spec.cache
        assert cache is not None and spec is not None  # only a pipeline with a cache names one
        ttl = spec.ttl
        if cache.name is not None and self.backend.keep_cache(cache.name, ttl):
            return cache.name
        title = cache_title(self.p.name, state)
        found = self.backend.find_cache(title)
        if found is not None and self.backend.keep_cache(found, ttl):
            cache.name = found
        else:
            body = json.loads(canonical(cache.body))
            files = {**names, **self._file_names(state, set(_FILE_REF.findall(json.dumps(body))))}
            body = json.loads(resolve_line(json.dumps(body), files))
            cache.name = self.backend.create_cache(self.p.spec.model, body, ttl, title)
            self._say(Action(Kind.UPLOAD, None, ""), f"created cache {cache.name}")
        self.store.save(state)
        return cache.name

    def _keep_cache(self, state: PipelineState) -> None:
        """Jobs still wait: push the cache's expiry out so their requests still find it."""
        if state.cache is not None and state.cache.name is not None:
            assert self.p.spec.cache is not None
            self.backend.keep_cache(state.cache.name, self.p.spec.cache.ttl)

    def _supersede(self, state: PipelineState, shard: Shard) -> None:
        """None of the shard's requests is wanted now: stop its job before it spends more (what it
        finished is still downloaded: paid for already), or make sure it is never sent."""
        done = "dropped it before it was sent"
        if shard.status is ShardStatus.SUBMITTED and shard.job_name is not None:
            try:
                self.backend.cancel(shard.job_name)
            except RemoteError as exc:
                if exc.code != 400:  # 400: it ended meanwhile; what it answered is downloaded
                    raise
            done = f"cancelled {shard.job_name}"
        self._save(state, shard, superseded=True)
        self._say(Action(Kind.CANCEL, shard.id, ""), f"{done}: {superseded_why(shard)}")

    def _cancel_if_stuck(self, state: PipelineState, shard: Shard, job: Job) -> None:
        """A job the service has left pending past batch.pending_timeout is cancelled: once the
        cancel lands, its requests (none answered) are sent again in a new job."""
        if not self.rules.stuck(shard, job.state):
            return
        timeout = self.rules.pending_timeout
        self.backend.cancel(job.name)
        self._save(state, shard, cancelled_pending=True)
        self._say(
            Action(Kind.POLL, shard.id, ""),
            f"cancelled {job.name}: still pending after batch.pending_timeout ({timeout:g} s); "
            "its requests will be sent again",
        )

    def _record_job(self, state: PipelineState, shard: Shard, job: Job, **extra) -> None:
        changes: dict = {
            "job_name": job.name,
            "job_state": job.state,
            "result_file": job.result_file,
            "quota_refused_at": None,
            **extra,
        }
        if job.done and job.state not in ANSWERED:
            # A failed job that left answers (Vertex exports the rows it finished) is
            # downloaded like a cancelled one: those answers are paid for already.
            status = ShardStatus.SUBMITTED if job.result_file else ShardStatus.FAILED
            changes.update(status=status, error=job.error)
        else:
            changes["status"] = ShardStatus.SUBMITTED
        self._save(state, shard, **changes)

    def _order(self, state: PipelineState, s: Scan) -> Path | None:
        return order_file(self.p, self.store, state, s.memo)

    def _write_output(self, state: PipelineState, s: Scan, action: Action) -> None:
        spec = self.p.spec
        failed = {sh.id: sh for sh in state.shards.values() if sh.status is ShardStatus.FAILED}
        layout = Layout.of(spec)
        out_uri = self.p.resolve(spec.output.uri)
        out_format = output_format(out_uri, spec.output.format)
        assert out_format is not None  # validate refuses an output whose format it cannot tell
        errors, failed_keys = 0, list[str]()
        try:
            with contextlib.ExitStack() as stack:
                if self.p.member is not None:
                    # A variant's rows go in its group's long-form output (run/evals.py), written
                    # once every member is settled: here they are only counted.
                    out = err = Sink(stack.enter_context(open(os.devnull, "wb")), "jsonl", layout)
                else:
                    out = stack.enter_context(open_sink(out_uri, out_format, layout))
                    err = (
                        stack.enter_context(open_sink(self.p.resolve(spec.errors.uri), "jsonl", layout))
                        if spec.errors.uri
                        else out
                    )
                batches = join_source(
                    self.p,
                    records(self.p),
                    self.index,
                    lambda shard: self.store.fetch(self.store.result_path(self.p.name, shard)),
                    failed,
                    self._order(state, s),
                    RowForm(
                        encode_out=out.format == "jsonl",
                        encode_err=err.format == "jsonl",
                        apart=err is not out,
                        columns_out=out.columns,
                    ),
                )
                for batch in batches:
                    errors += batch.errors
                    failed_keys += batch.failed_keys[: FAILED_KEYS_KEPT - len(failed_keys)]
                    out.write_many(batch.out, batch.out_rows)
                    if batch.err_rows:
                        err.write_many(batch.err, batch.err_rows)
                count = out.count + (err.count if err is not out else 0)
        except order.StaleOrder as exc:
            exc.path.unlink(missing_ok=True)  # the next apply renders the source instead
            raise SourceError(
                "the source changed while the output was being written; run apply again",
                uri=source_name(self.p),
            ) from None
        except OSError as exc:  # a full disk, a folder made read-only since the check
            raise OutputError(f"{out_uri}: cannot write the output: {exc}") from None
        state.output = OutputRecord(
            uri=spec.output.uri,
            digest=s.digest,
            results=results_fingerprint(state),
            records=count,
            errors=errors,
            failed_keys=failed_keys,
            written_at=now(),
        )
        self.store.save(state)
        where = f" ({errors} errors" + (f" to {spec.errors.uri})" if spec.errors.uri else ")")
        if self.p.member is not None:
            where += f", for {self.p.member.group}'s output"
        self._say(action, f"{count} records{where}")


def _answered_keys(part: Path) -> set[str]:
    """The request hashes a flex shard's partial answers hold; a last line cut by a kill is
    dropped from the file, so the next answer starts a line of its own."""
    if not part.exists():
        return set()
    keys, good = set(), 0
    with open(part, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                keys.add(json.loads(line)["key"])
            except (ValueError, KeyError):
                break
            good += len(line)
    if good != part.stat().st_size:
        os.truncate(part, good)
    return keys


def _blocked(p: LoadedPipeline, outcome: Outcome | None) -> str | None:
    """Why a stage cannot go on now: its upstream, in this run, stopped or has no answer yet;
    out of this run, it has not written its output or has work in progress."""
    up = p.upstream
    if outcome is None:
        return upstream_ready(up)
    if outcome.error:
        return f"waits for {up.name}, which stopped"
    if outcome.done or answered(up):
        return None
    return f"waits for {up.name}, whose jobs are at work"


def apply_all(
    pipelines: list[LoadedPipeline],
    stores: Stores,
    backends: Callable[[LoadedPipeline], Backend],
    report: Report,
    *,
    wait: bool = False,
    allow_shrink: bool = False,
    retry_errors: bool = False,
    max_concurrent_jobs: int | None = None,
    prices: PriceTable | None = None,
    max_usd: float | None = None,
    progress: Reporter | None = None,
    poll_interval: float = 30.0,
    warn: Callable[[str, str], None] = lambda pipeline, message: None,
    pause: Callable[[float, list[Outcome]], None] = lambda seconds, outcomes: time.sleep(seconds),
) -> list[Outcome]:
    """Apply each pipeline; with wait, repeat (backing off) until all are done.

    With wait, errors that may pass (429, 5xx, a held lock) are reported and
    tried again on the next round. Other errors, and those without wait, stop
    that pipeline only (`Outcome.error`); the next apply resumes it from its
    saved state.
    """
    delay = min(0.5, poll_interval)
    outcomes = {p.name: Outcome(p.name) for p in pipelines}
    retried: set[str] = set()  # --retry-errors raises each pipeline's retry round once per run
    warned: dict[str, type] = {}  # the kind of passing error each pipeline was last warned of
    while True:
        for p in pipelines:
            total = outcomes[p.name]
            if total.done:
                continue  # finished in an earlier round
            upstream_done = True
            if p.upstream is not None:
                total.blocked = _blocked(p, outcomes.get(p.upstream.name))
                if total.blocked is not None:
                    # An upstream that stopped will not finish in this run: neither can its stages.
                    total.done = outcomes[p.upstream.name].done if p.upstream.name in outcomes else True
                    continue
                up = outcomes.get(p.upstream.name)
                upstream_done = up is None or up.done
            applier = None
            try:
                applier = Applier(
                    p,
                    stores.checked(p, applying=True),
                    backends(p),
                    report,
                    allow_shrink=allow_shrink,
                    retry_errors=retry_errors and p.name not in retried,
                    max_concurrent_jobs=max_concurrent_jobs,
                    prices=prices,
                    max_usd=max_usd,
                    progress=progress,
                )
                this = applier.run()
            except (BatchflowError, OSError) as exc:
                if wait and getattr(exc, "transient", False):
                    if warned.get(p.name) is not type(exc):  # once, not at every round of --wait
                        warn(p.name, f"{exc}; trying again")
                        warned[p.name] = type(exc)
                    continue
                # This pipeline stops here; the others go on, and the run exits 1 at the end.
                total.error, total.exception, total.done = str(exc), exc, True
                continue
            finally:
                if applier is not None and applier.retried:
                    retried.add(p.name)
            warned.pop(p.name, None)
            total.actions += this.actions
            # A stage that started on its upstream's first answers is done once the upstream is.
            total.waiting, total.done, total.failed = this.waiting, this.done and upstream_done, this.failed
            if not upstream_done and this.done:
                total.blocked = f"more records as {p.upstream.name} answers"
        if not wait or all(o.done for o in outcomes.values()):
            return list(outcomes.values())
        pause(delay, list(outcomes.values()))
        delay = min(delay * 2, poll_interval)
