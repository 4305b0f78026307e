"""Reconciling, the deciding half: what a pipeline needs, from its spec, its source and its state.

`scan` reads the desired side (spec + source, and which requests the state
already covers); `next_action` and `plan` are pure functions of that scan, the
state and the `Rules` (job slots, inline, pending timeout, the time). `act.py`
takes the actions, asking the same `Rules`, so `plan` shows what `apply` does now,
and what it holds back and why.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import fsspec

from .. import __version__
from ..errors import SourceError
from ..prepare import order
from ..prepare.parallel import ScanBatch, render_source
from ..prepare.render import (
    FileRef,
    Renderer,
)
from ..prepare.shards import ShardInfo, build
from ..prepare.sources import CsvDialect, Record, read_records, stamp
from ..spec.catalog import load_catalog
from ..spec.matrix import storage_name
from ..spec.models import LoadedPipeline
from ..spec.pricing import estimate_text
from ..spec.units import plural
from ..state.index import RequestIndex
from ..state.store import (
    ANSWERED,
    JOB_ENDED,
    OutputRecord,
    PipelineState,
    ScanMemo,
    Shard,
    ShardStatus,
    StateStore,
    state_word,
)
from . import graph

# Bumped when the columns batchflow writes change, so existing outputs are written again.
OUTPUT_LAYOUT = 2
SAMPLE_LINES = 20  # new requests counted by the API with `plan --count-tokens`


class Kind(StrEnum):
    SUBMIT = "submit"  # write a new shard, upload it, create its job
    CANCEL = "cancel"  # a shard none of whose requests the spec wants any more (superseded)
    UPLOAD = "upload"
    CREATE = "create"
    ADOPT = "adopt"  # a create may have happened: find the job, else create it
    POLL = "poll"
    DOWNLOAD = "download"
    RETRY = "retry"  # the job failed: submit the same shard again
    OUTPUT = "output"
    HOLD = "hold"  # a step apply will not take now (no job slot): not a change
    SEND = "send"  # a flex shard: its requests go out as calls, each answer saved as it comes


_SYMBOL = {Kind.SUBMIT: "+", Kind.OUTPUT: "+", Kind.RETRY: "~", Kind.CANCEL: "-", Kind.HOLD: "="}


@dataclass(frozen=True)
class Rules:
    """What decides a pipeline's next steps besides its state and its scan: its settings, the
    apply's options, what its backend takes, and the time. `plan` and the applier both ask
    these, so that `plan` shows what `apply` does now."""

    attempts: int
    max_jobs: int | None = None  # batch.max_concurrent_jobs, or --max-concurrent-jobs over it
    inline_below: int = 0  # bytes; 0 where the backend takes no inline requests (Vertex)
    pending_timeout: float | None = None  # seconds a job may stay pending before it is cancelled
    tier: str | None = None  # flex: new shards go out as calls on that tier, not as jobs
    auto_below: int | None = None  # tier: auto: flex for fewer new requests than this, else batch
    stage: bool = False  # the pipeline reads another's results (auto sends a stage on flex)
    now: float | None = None  # the time decisions are made at; None: the clock's, when asked

    @classmethod
    def of(
        cls,
        pipeline: LoadedPipeline,
        *,
        max_concurrent_jobs: int | None = None,
        takes_inline: bool = True,
        now: float | None = None,
    ) -> Rules:
        spec = pipeline.spec
        return cls(
            attempts=spec.retry.attempts,
            max_jobs=max_concurrent_jobs or spec.batch.max_concurrent_jobs,
            inline_below=spec.batch.inline_below if takes_inline else 0,
            pending_timeout=spec.batch.pending_timeout,
            tier=spec.tier if spec.tier in ("flex", "standard", "priority") else None,
            auto_below=spec.flex.auto_below if spec.tier == "auto" else None,
            stage=pipeline.spec.source.pipeline is not None,
            now=now,
        )

    def inline(self, size: int, tier: str | None = None) -> bool:
        """Whether a new shard of `size` bytes (going out on `tier`, None for batch) travels in
        the create call instead of a file."""
        return tier is None and size < self.inline_below

    def choose(self, new_requests: int) -> tuple[str | None, str]:
        """The tier of a run's new shards (None: batch), and with `tier: auto`, why: flex for a
        stage (its upstream's answers come in minutes; a day's batch would hold the chain) and
        for small work, batch for large."""
        if self.auto_below is None:
            return self.tier, ""
        if self.stage:
            return "flex", "auto: a stage goes on flex"
        if new_requests < self.auto_below:
            return "flex", f"auto: {new_requests:,} new requests, under flex.auto_below ({self.auto_below:,})"
        return None, f"auto: batch for {new_requests:,} new requests (flex.auto_below: {self.auto_below:,})"

    def slots_free(self, state: PipelineState) -> int | None:
        """Jobs that may start now under max_jobs (None: no limit)."""
        if self.max_jobs is None:
            return None
        return max(0, self.max_jobs - sum(occupies_slot(sh) for sh in state.shards.values()))

    def stuck(self, shard: Shard, job_state: str | None) -> bool:
        """Whether a job pending since its create has waited past pending_timeout (and was not
        cancelled for it already): apply cancels it, and its requests go in a new job."""
        if job_state != "JOB_STATE_PENDING" or shard.cancelled_pending or not shard.submitted_at:
            return False
        if self.pending_timeout is None:
            return False
        now = time.time() if self.now is None else self.now
        return now - datetime.fromisoformat(shard.submitted_at).timestamp() >= self.pending_timeout

    def held(self) -> str:
        return f"waits for a job slot ({self.max_jobs} at work: batch.max_concurrent_jobs)"


@dataclass(frozen=True)
class Action:
    kind: Kind
    shard: str | None
    reason: str

    @property
    def symbol(self) -> str:
        return _SYMBOL.get(self.kind, "~")


@dataclass
class Scan:
    """The desired side of one pipeline, read from its spec and source."""

    requests: int
    new_shards: list[ShardInfo]
    digest: str  # the output that should exist: ordered request hashes and output settings
    output_exists: bool
    files: dict[str, FileRef] = field(default_factory=dict)  # digest -> file the requests name
    cache: dict | None = None  # the cache's REST body, with placeholders
    memo: ScanMemo | None = None  # what this scan read, for the next one to skip rendering
    new_tokens: int = 0  # input tokens of the new requests, estimated locally
    resent_answered: int = 0  # new requests of records whose earlier request was answered: paid again
    sample: list[str] = field(default_factory=list)  # the first new lines (`plan --count-tokens`)
    # Shards on their way to a job, or at work, none of whose requests the spec wants now (the
    # model or the requests changed): left alone, they would run and be paid for nothing.
    superseded: list[str] = field(default_factory=list)


def display_name(pipeline: str, shard: Shard, lineage: str | None = None) -> str:
    """Deterministic job name: how a crashed apply finds the job it created. The state's lineage
    keeps another store's job for the same pipeline and shard from being taken for ours (a state
    of batchflow 0.x, with no lineage yet, keeps the old names until nothing awaits adoption)."""
    return _service_name(pipeline, lineage, f"{shard.id[:16]}-{shard.attempt}")


def cache_title(pipeline: str, state: PipelineState) -> str:
    """Deterministic, like job names: a run killed between the create and the state write finds
    its cache instead of paying for a second one."""
    assert state.cache is not None
    return _service_name(pipeline, state.lineage, state.cache.digest[:12])


def file_title(pipeline: str, state: PipelineState, digest: str) -> str:
    """The display name of a file that requests or the cache name, uploaded for this pipeline:
    destroy finds an upload whose name a killed run never saved."""
    return _service_name(pipeline, state.lineage, digest[:16])


def _service_name(pipeline: str, lineage: str | None, tail: str) -> str:
    """What batchflow names a thing it makes on the service: the pipeline, the state's lineage
    (none in a state of batchflow 0.x) and what tells the thing apart."""
    name = storage_name(pipeline)  # a variant's name holds brackets: not in a display name
    return f"batchflow-{name}-{lineage}-{tail}" if lineage else f"batchflow-{name}-{tail}"


def unsent(shard: Shard, attempts: int) -> bool:
    """Whether a shard's requests may still be sent and paid for: not yet at the service, at
    work there, or failed with tries left. (A create in doubt is adopted first.)"""
    if shard.superseded:
        return False
    if shard.status is ShardStatus.SUBMITTED:
        return shard.job_state not in JOB_ENDED
    if shard.status is ShardStatus.FAILED:
        return shard.attempt < attempts
    return shard.status in (ShardStatus.PREPARED, ShardStatus.UPLOADED)


def superseded_action(shard: Shard) -> Action:
    what = (
        f"cancel {shard.job_name}" if shard.status is ShardStatus.SUBMITTED else "drop it before it is sent"
    )
    return Action(Kind.CANCEL, shard.id, f"{what}: {superseded_why(shard)}")


def superseded_why(shard: Shard) -> str:
    return f"superseded, none of its {shard.requests} requests is in the spec now"


def next_action(shard: Shard, attempts: int) -> Action | None:
    """The next step for one shard, from its recorded status alone."""
    s = ShardStatus
    if shard.superseded and shard.status is not s.SUBMITTED:
        return None  # never sent, or failed: nothing to wait for
    match shard.status:
        case s.PREPARED if shard.tier:
            count = f"{shard.requests} {plural(shard.requests, 'request')}"
            return Action(Kind.SEND, shard.id, f"send {count} on the {shard.tier} tier")
        case s.PREPARED if shard.inline:
            return Action(Kind.CREATE, shard.id, f"create batch job with {shard.requests} inline requests")
        case s.PREPARED:
            count = f"{shard.requests} {plural(shard.requests, 'request')}"
            return Action(Kind.UPLOAD, shard.id, f"upload input ({count})")
        case s.UPLOADED:
            return Action(Kind.CREATE, shard.id, "create batch job")
        case s.CREATING:
            return Action(Kind.ADOPT, shard.id, "find the job an interrupted run created, or create it")
        # A cancelled job keeps the results of the requests it finished, and so does a failed
        # one that left them (Vertex); the rest are sent again by the next scan, as requests
        # without an answer.
        case s.SUBMITTED if shard.job_state in ANSWERED or (
            shard.job_state in JOB_ENDED and shard.result_file
        ):
            return Action(Kind.DOWNLOAD, shard.id, f"download results of {shard.job_name}")
        case s.SUBMITTED:
            return Action(Kind.POLL, shard.id, f"poll {shard.job_name} ({state_word(shard.job_state)})")
        case s.FAILED if shard.attempt < attempts:
            return Action(Kind.RETRY, shard.id, f"resubmit (attempt {shard.attempt + 1} of {attempts})")
    return None


def occupies_slot(shard: Shard) -> bool:
    """Whether a shard counts against batch.max_concurrent_jobs: on its way to a job, or its job at work."""
    if shard.superseded:
        return False  # cancelled, or never to be sent
    if shard.status in (ShardStatus.UPLOADED, ShardStatus.CREATING):
        return True
    return shard.status is ShardStatus.SUBMITTED and shard.job_state not in JOB_ENDED


def is_live(shard: Shard, attempts: int, round: int) -> bool:
    """Whether a shard still stands for its requests: not done, and not a job that failed for
    good in an earlier retry round (its requests are then sent again in a new shard), nor one
    superseded (its requests, wanted again, are sent in a new shard)."""
    if shard.status is ShardStatus.DONE or shard.superseded:
        return False
    return not (shard.status is ShardStatus.FAILED and shard.attempt >= attempts and shard.round < round)


def policy_breach(pipeline: LoadedPipeline, output: OutputRecord | None) -> str | None:
    """How the output's failed requests break the pipeline's errors policy; None if they do not."""
    if output is None:
        return None
    why = pipeline.spec.errors.exceeded(output.errors, output.records)
    return f"{output.errors} of {output.records} requests failed ({why})" if why else None


def empty_source(pipeline: LoadedPipeline) -> SourceError:
    return SourceError("the source has no records", uri=source_name(pipeline))


def check_shrink(pipeline: LoadedPipeline, state: PipelineState, scan: Scan, allow: bool) -> None:
    """Refuse to let a source that lost many records since the last output replace that output
    (a truncated or wrong file), unless the user says so. A stage's records are its upstream's
    answered rows: fewer of them means rows still to come or answers that failed, which the
    upstream reports (and its own guard stands for a truncated file)."""
    if pipeline.upstream is not None:
        return
    before = state.output.records if state.output else 0
    lost = before - scan.requests
    if lost > 0 and lost > before * pipeline.spec.output.max_shrink and not allow:
        raise SourceError(
            f"the source has {scan.requests} records, {lost} fewer than the {before} of the last output; "
            f"writing it would drop {lost} rows (over output.max_shrink "
            f"{pipeline.spec.output.max_shrink:g}). Run with --allow-shrink if that is intended",
            uri=source_name(pipeline),
        )


def results_fingerprint(state: PipelineState) -> str:
    """Which results the state holds: changes whenever a job's results arrive or a job fails
    for good, so an output written before then is written again (a retry's answers included)."""
    settled = sorted(
        f"{sh.id}:{sh.status}:{sh.attempt}:{sh.job_name}"
        for sh in state.shards.values()
        if sh.status in (ShardStatus.DONE, ShardStatus.FAILED)
    )
    return hashlib.sha256("\n".join(settled).encode()).hexdigest()


def output_reason(state: PipelineState, scan: Scan) -> str | None:
    """Why the output must be written (again), once every request is settled; None if it is current."""
    out = state.output
    if out is None:
        return "not written yet"
    if not scan.output_exists:
        return "the file is missing"
    if out.digest != scan.digest:
        return "the records or output settings changed"
    if out.results != results_fingerprint(state):
        return "new results arrived since it was written"
    return None


def plan(state: PipelineState, scan: Scan, rules: Rules, output_uri: str) -> list[Action]:
    """Every action apply would take now, in order, and those it holds back (Kind.HOLD), as
    it decides them: superseded shards give up their job slots first, then the shards there
    were take the free ones in turn, then the new shards. Pure: no I/O."""
    superseded = set(scan.superseded)
    free = rules.slots_free(state)
    if free is not None:
        free += sum(occupies_slot(state.shards[s]) for s in superseded)

    def starts() -> bool:
        nonlocal free
        if free is None:
            return True
        free -= 1
        return free >= 0

    actions: list[Action] = []
    for shard in state.shards.values():
        if shard.id in superseded:
            actions.append(superseded_action(shard))
        elif (action := next_action(shard, rules.attempts)) is not None:
            if shard.status is ShardStatus.PREPARED and not shard.tier and not starts():
                action = Action(Kind.HOLD, shard.id, f"{action.reason}: {rules.held()}")
            elif shard.quota_refused_at and shard.status in (ShardStatus.PREPARED, ShardStatus.UPLOADED):
                reason = f"{action.reason} (the last try was refused for quota)"
                action = Action(action.kind, shard.id, reason)
            elif action.kind is Kind.POLL and rules.stuck(shard, shard.job_state):
                timeout = f"{rules.pending_timeout:g} s"
                reason = f"{action.reason}; cancel it if still pending (batch.pending_timeout: {timeout})"
                action = Action(Kind.POLL, shard.id, reason)
            actions.append(action)
    new = []
    tier, chosen = rules.choose(sum(info.requests for info in scan.new_shards))
    for info in scan.new_shards:
        how = ", inline" if rules.inline(info.bytes, tier) else f", on the {tier} tier" if tier else ""
        how += ", each answer saved as it comes: a kill loses at most the calls in flight" if tier else ""
        how += f"; {chosen}" if chosen else ""
        reason = f"submit {info.requests} new {plural(info.requests, 'request')} ({info.bytes} bytes{how})"
        held = tier is None and not starts()  # calls take no job slot
        new.append(Action(Kind.SUBMIT, info.id, f"{reason}; {rules.held()}" if held else reason))
    actions = new + actions
    if not actions and (why := output_reason(state, scan)):
        actions.append(Action(Kind.OUTPUT, None, f"write {scan.requests} records to {output_uri} ({why})"))
    return actions


# ---------------------------------------------------------------- I/O side


def records(pipeline: LoadedPipeline) -> Iterator[Record]:
    source = pipeline.spec.source
    if pipeline.upstream is not None:
        return (
            graph.judged(pipeline) if pipeline.member and pipeline.member.judge else graph.records(pipeline)
        )
    assert source.uri is not None  # a source has uri or pipeline, and a pipeline's is linked
    dialect = CsvDialect(**source.csv.model_dump()) if source.csv else None
    return read_records(pipeline.resolve(source.uri), source.format, dialect)


def source_name(pipeline: LoadedPipeline) -> str:
    """The source as errors name it: its files, or the pipeline whose results it reads."""
    source = pipeline.spec.source
    return f"pipeline:{source.pipeline}" if source.uri is None else pipeline.resolve(source.uri)


def scan(
    pipeline: LoadedPipeline,
    state: PipelineState,
    store: StateStore,
    index: RequestIndex,
    *,
    write: bool,
    keep_order: bool = False,
    retry_errors: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Scan:
    """Render the source; group requests the state does not cover yet into shards.

    With write=True the shard files are written into the store and recorded
    in the index (apply); with write=False only their ids are computed (plan).
    keep_order: a full scan keeps its records' keys and hashes (order.py) for
    the scans and output join of the same inputs (apply).
    retry_errors: as if the retry round were raised (`plan --retry-errors`).
    progress: told the number of records rendered so far, chunk by chunk.
    """
    round = state.retry_round + (1 if retry_errors else 0)
    # Taken before reading: a file changed while it is read is seen as changed next time.
    (inputs, requested), results = inputs_fingerprints(pipeline, state), results_fingerprint(state)
    memo = state.scan_memo
    attempts = pipeline.spec.retry.attempts
    in_flight = {sh.id for sh in state.shards.values() if unsent(sh, attempts)}
    if memo is not None and (memo.inputs, memo.results, memo.round) == (inputs, results, round):
        return _nothing_new(pipeline, memo, in_flight)
    live = {sh.id for sh in state.shards.values() if is_live(sh, attempts, round)}
    used: set[str] = set()  # live shards that hold a request the spec wants
    folder = store.folder(pipeline.name)
    known = order.find(folder, requested) or order.find(folder, inputs)  # as an earlier batchflow named it
    # Only the output or errors settings changed since the last scan: the same requests, all
    # covered as they were then; only the digest, which covers the settings, is new.
    settled = memo is not None and (memo.requested, memo.results, memo.round) == (requested, results, round)
    memo_of = functools.partial(ScanMemo, inputs=inputs, requested=requested, results=results, round=round)
    if settled and memo is not None:
        used = live - set(memo.superseded)  # as the memo's scan found them
    if known is not None and (found := _rescan(pipeline, known, index, live, round, progress, settled, used)):
        requests, digest_hex = found
        return _nothing_new(
            pipeline,
            memo_of(requests=requests, digest=digest_hex, superseded=sorted(in_flight - used)),
            in_flight,
        )
    used = set()
    index.forget_keys()
    renderer = Renderer(pipeline)
    token_limit = input_limit(pipeline, renderer)
    spec = pipeline.spec
    digest = hashlib.sha256(output_settings(pipeline).encode())
    count = tokens = resent = 0
    sample: list[str] = []

    def new_requests():
        """In batches, as columns: the lines, keys and hashes of the requests no shard or answer
        covers yet. Per batch, not per record: each step is then one call into C."""
        nonlocal count, tokens, resent
        for batch in render_source(pipeline, renderer, records(pipeline)):
            keys, hashes, lines, uris, numbers, estimates = batch
            repeat = index.first_seen(keys, uris, numbers)  # records the batch's keys
            covered = index.covered(hashes, live, spec.retry.attempts, round, used)
            if (error := _first_error(pipeline, batch, repeat, covered, token_limit)) is not None:
                raise error
            if keep is not None:
                keep(keys, hashes)
            count += len(keys)
            digest.update("".join(hashes).encode())  # as one update per hash, in one call
            if covered:
                new = [h not in covered for h in hashes]
                keys, hashes, lines, estimates = (
                    list(itertools.compress(column, new)) for column in (keys, hashes, lines, estimates)
                )
            if lines:
                resent += index.answered_before(list(zip(keys, hashes, strict=True)))
                tokens += sum(estimates)
                sample.extend(lines[: SAMPLE_LINES - len(sample)])
                yield lines, keys, hashes
            if progress is not None:
                progress(count)

    # Each shard is indexed once written, before the state names it: a crash in between
    # leaves index rows for shards the state does not know, which nothing reads; the reverse
    # would resend them.
    with (
        order.recording(folder, requested) if keep_order else contextlib.nullcontext() as keep,
        index.adding_shards() if write else contextlib.nullcontext() as add_shard,
    ):
        shards = build(
            new_requests(),
            spec.batch.max_requests,
            spec.batch.max_bytes,
            folder / "shards" if write else None,
            taken=set(state.shards),
            on_seal=(lambda info, rows: add_shard(info.id, rows)) if write else None,  # type: ignore[misc]
        )
        if count == 0 and pipeline.upstream is None:  # a stage's upstream may have no answer (yet)
            raise empty_source(pipeline)
    return Scan(
        requests=count,
        new_shards=shards,
        digest=digest.hexdigest(),
        output_exists=_exists(pipeline.resolve(spec.output.uri)),
        files=renderer.files.seen,
        cache=renderer.cache,
        memo=memo_of(requests=count, digest=digest.hexdigest(), superseded=sorted(in_flight - used)),
        new_tokens=tokens,
        resent_answered=resent,
        sample=sample,
        superseded=sorted(in_flight - used),
    )


def input_limit(pipeline: LoadedPipeline, renderer: Renderer) -> int | None:
    """The most input tokens one request may hold besides the cache's: the model's input limit
    (None for a model batchflow does not know)."""
    found = load_catalog().answering(pipeline.spec.model)
    if found is None or found[1].input_tokens is None:
        return None
    cached = estimate_text(renderer.cache, renderer.files.seen) if renderer.cache else 0
    return found[1].input_tokens - cached


def over_input_limit(pipeline: LoadedPipeline, key: str, tokens: int, limit: int) -> str:
    """Why a request of `tokens` (estimated) is refused, when `input_limit` said `limit`."""
    found = load_catalog().answering(pipeline.spec.model)
    model_limit = found[1].input_tokens if found else None
    assert model_limit is not None  # as input_limit found it
    cached = f" (and {model_limit - limit:,} in the cache)" if model_limit > limit else ""
    return (
        f"record {key!r}: request: ~{tokens:,} input tokens{cached}, over the {model_limit:,} that "
        f"{pipeline.spec.model} takes: the service would refuse it"
    )


def _first_error(
    pipeline: LoadedPipeline,
    batch: ScanBatch,
    repeat: tuple[int, str, int] | None,
    covered: set[str],
    token_limit: int | None = None,
) -> SourceError | None:
    """The error of the batch's first record that has one: a key seen before in this scan
    (`repeat`, from RequestIndex.first_seen), a new request over batch.max_bytes, or one over
    the model's input tokens (`token_limit`). By position, so that batches of any size find the
    error the source's first bad record makes."""
    errors: list[tuple[int, SourceError]] = []
    if repeat is not None:
        i, uri, line = repeat
        errors.append(
            (i, duplicate_error(pipeline, batch.keys[i], (uri, line), batch.uris[i], batch.numbers[i]))
        )
    limit = pipeline.spec.batch.max_bytes
    if max(map(len, batch.lines)) + 1 > limit:
        big = (
            i
            for i, line in enumerate(batch.lines)
            if len(line) + 1 > limit and batch.hashes[i] not in covered
        )
        if (first := next(big, None)) is not None:
            size = len(batch.lines[first]) + 1
            message = f"record {batch.keys[first]!r}: its request is {size} bytes, over batch.max_bytes"
            errors.append((first, SourceError(message, uri=batch.uris[first], line=batch.numbers[first])))
    if token_limit is not None and max(batch.estimates) > token_limit:
        long = (
            i for i, n in enumerate(batch.estimates) if n > token_limit and batch.hashes[i] not in covered
        )
        if (first := next(long, None)) is not None:
            message = over_input_limit(pipeline, batch.keys[first], batch.estimates[first], token_limit)
            errors.append((first, SourceError(message, uri=batch.uris[first], line=batch.numbers[first])))
    return min(errors, key=lambda error: error[0])[1] if errors else None


def _nothing_new(pipeline: LoadedPipeline, memo: ScanMemo, in_flight: set[str]) -> Scan:
    """A scan that rendered nothing and found no request to send: what `memo` says."""
    output = _exists(pipeline.resolve(pipeline.spec.output.uri))
    return Scan(
        requests=memo.requests,
        new_shards=[],
        digest=memo.digest,
        output_exists=output,
        memo=memo,
        superseded=sorted(in_flight.intersection(memo.superseded)),
    )


def _rescan(
    pipeline: LoadedPipeline,
    known: Path,
    index: RequestIndex,
    live: set[str],
    round: int,
    progress: Callable[[int], None] | None,
    covered: bool = False,
    used: set[str] | None = None,
) -> tuple[int, str] | None:
    """A scan of unchanged inputs from their order file, without rendering: (requests, digest)
    when every request is covered, None when one needs a new shard (its line is then needed,
    so the source is rendered after all). `covered`: known to be, unchecked. `used` gathers
    the live shards that hold a request."""
    attempts = pipeline.spec.retry.attempts
    digest = hashlib.sha256(output_settings(pipeline).encode())
    count = 0
    try:
        for _, hashes in order.chunks(known):
            if not covered and not index.covered(hashes, live, attempts, round, used).issuperset(hashes):
                return None
            count += len(hashes)
            digest.update("".join(hashes).encode())
            if progress is not None:
                progress(count)
    except order.StaleOrder:
        return None  # damaged: the full scan writes it again
    return count, digest.hexdigest()


def order_file(
    pipeline: LoadedPipeline, store: StateStore, state: PipelineState, memo: ScanMemo | None
) -> Path | None:
    """The scan's order file, if the inputs are still those it was made of: the join then
    takes each record's key and hash from it instead of rendering it again."""
    if memo is None or inputs_fingerprint(pipeline, state) != memo.inputs:
        return None
    # A memo of an earlier batchflow has no `requested`: its order file is named by `inputs`.
    return order.find(store.folder(pipeline.name), memo.requested or memo.inputs)


def inputs_fingerprint(pipeline: LoadedPipeline, state: PipelineState) -> str:
    """Everything a scan reads, stamped without reading it: the spec as loaded (so `${VAR}` and
    `$ref` files count), the source files and the files requests name."""
    return inputs_fingerprints(pipeline, state)[0]


def inputs_fingerprints(pipeline: LoadedPipeline, state: PipelineState) -> tuple[str, str]:
    """inputs_fingerprint, and the same without the output and errors settings: what the
    records' keys and requests depend on (the order file's name, so that a new output format
    renders nothing again). The files are stamped once for both (a bucket's costs a call)."""
    spec = pipeline.spec
    files = [stamp(path) for path in sorted({b.path for b in state.blobs.values()})]
    source = graph.stamp(pipeline.upstream) if pipeline.upstream else stamp(source_name(pipeline))

    def digest(dumped: str) -> str:
        parts = [__version__, OUTPUT_LAYOUT, str(pipeline.path.resolve()), dumped, source, files]
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()

    return digest(spec.model_dump_json()), digest(spec.model_dump_json(exclude={"output", "errors"}))


def duplicate_error(
    pipeline: LoadedPipeline, key: str, first: tuple[str, int], uri: str, line: int
) -> SourceError:
    """The error for the record at `uri`:`line`, whose key was seen first at `first` (uri, line)."""
    where = f"line {first[1]}" if first[0] == uri else f"{first[0]}:{first[1]}"
    if pipeline.spec.source.key_template is None:
        message = f"this record is an exact copy of the one at {where}; remove it, or set source.key"
    else:
        message = f"duplicate key {key!r}, also at {where} (source.key must be unique)"
    return SourceError(message, uri=uri, line=line)


def output_uris(pipeline: LoadedPipeline) -> list[str]:
    """Where results are written: the output, and the errors file if it has its own."""
    spec = pipeline.spec
    return [pipeline.resolve(u) for u in (spec.output.uri, spec.errors.uri) if u]


def output_settings(pipeline: LoadedPipeline) -> str:
    """What, besides the results, decides the output files' contents."""
    spec = pipeline.spec
    return json.dumps(
        [
            pipeline.resolve(spec.output.uri),
            spec.output.format,
            spec.output.columns,
            pipeline.resolve(spec.errors.uri) if spec.errors.uri else None,
            spec.output.include_response,
            spec.errors.finish_reasons,
            OUTPUT_LAYOUT,
        ]
    )


def _exists(uri: str) -> bool:
    if "://" not in uri:
        return Path(uri).exists()
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.exists(path)
