"""Stages: pipelines whose records are another pipeline's results.

`link` connects each stage (`source: {pipeline: NAME}`) to its upstream, refusing an unknown
name, a cycle, or an upstream whose state is in another store, and orders the pipelines so that
every upstream comes before its stages. A stage's records are its upstream's answered rows,
joined from the upstream's state by the join that writes the upstream's output (so they are
typed as the upstream kept them, whatever its output format), with `where` and `group_by`
applied. Requests are content-addressed as any others: an upstream answer that did not change
makes the same downstream request, which is not sent again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import SourceError, SpecError
from ..output.join import unanswered
from ..prepare.render import TEMPLATES
from ..prepare.sources import Record
from ..spec.models import LoadedPipeline
from ..spec.project import Stores
from ..state.store import ShardStatus, StateStore


@dataclass(frozen=True)
class Upstream:
    pipeline: LoadedPipeline
    store: StateStore

    @property
    def name(self) -> str:
        return self.pipeline.name


def link(pipelines: list[LoadedPipeline], stores: Stores) -> tuple[list[LoadedPipeline], list[SpecError]]:
    """The pipelines, each stage given its upstream, upstreams before their stages (otherwise in
    the order given); and the problems of the stages that cannot be linked (an unknown name, a
    cycle, an upstream in another store), which are left out with every stage below them."""
    by_name = {p.name: p for p in pipelines}
    problems: dict[str, SpecError] = {}
    for p in pipelines:
        name = p.spec.source.pipeline
        if name is None:
            continue
        if name not in by_name:
            near = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems[p.name] = _error(p, f"no pipeline named {name!r} was loaded{hint}")
        elif stores.location(by_name[name]) != stores.location(p):
            problems[p.name] = _error(
                p,
                f"{name!r} keeps its state in {stores.location(by_name[name])}, this pipeline in "
                f"{stores.location(p)}: a stage reads its upstream's state, so both need one store",
            )
    for name, cycle in _cycles(by_name):
        problems.setdefault(name, _error(by_name[name], f"a cycle of stages: {' -> '.join(cycle)}"))
    linked: dict[str, LoadedPipeline | None] = {}

    def visit(p: LoadedPipeline) -> LoadedPipeline | None:
        if p.name not in linked:
            linked[p.name] = None  # while visiting: a cycle, already a problem, ends here
            name = p.spec.source.pipeline
            if p.name in problems:
                pass
            elif name is None:
                linked[p.name] = p
            elif (up := visit(by_name[name])) is not None:
                linked[p.name] = dataclasses.replace(p, upstream=Upstream(up, stores.of(up)))
            else:
                problems[p.name] = _error(p, f"its upstream {name!r} cannot run (see its error)")
        return linked[p.name]

    for p in pipelines:
        visit(p)
    return [p for p in linked.values() if p is not None], list(problems.values())


def with_upstreams(pipelines: list[LoadedPipeline], targets: list[str]) -> set[str]:
    """The targets and every pipeline they read, however far up: `--target` brings them along."""
    by_name = {p.name: p for p in pipelines}
    wanted: set[str] = set()
    todo = list(targets)
    while todo:
        name = todo.pop()
        if name in wanted or name not in by_name:
            continue
        wanted.add(name)
        if (up := by_name[name].spec.source.pipeline) is not None:
            todo.append(up)
    return wanted


def _cycles(by_name: dict[str, LoadedPipeline]) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    for start in by_name:
        path: list[str] = []
        name: str | None = start
        while name in by_name and name not in seen and name not in path:
            path.append(name)
            name = by_name[name].spec.source.pipeline
        if name is not None and name in path:
            cycle = path[path.index(name) :] + [name]
            if not seen & set(cycle):
                found.append((name, cycle))
        seen |= set(path)
    return found


def _error(p: LoadedPipeline, message: str) -> SpecError:
    return SpecError(message, file=str(p.path), line=p.source_line or p.line, field="source.pipeline")


# ---------------------------------------------------------------- the stage's records


def upstream_ready(up: Upstream) -> str | None:
    """Why a stage cannot read its upstream's results now; None when it can: the upstream has
    written its output (every request answered) and has no shard at work."""
    state = up.store.load(up.name)
    if state.output is None:
        return f"waits for {up.name}, whose output is not written yet"
    settled = (ShardStatus.DONE, ShardStatus.FAILED)
    if any(s.status not in settled for s in state.shards.values()):
        return f"waits for {up.name}, which has work in progress"
    return None


def stamp(up: Upstream) -> list[Any]:
    """What tells, without reading them, whether the upstream's rows changed: what its
    requests are made of (its spec and source, its own upstream's rows for a stage of a stage),
    the results its state holds (new ones arrive while its jobs work) and its retry round."""
    from .reconcile import inputs_fingerprint, results_fingerprint

    state = up.store.load(up.name)
    return [up.name, inputs_fingerprint(up.pipeline, state), results_fingerprint(state), state.retry_round]


def answered(up: Upstream) -> bool:
    """Whether some of the upstream's requests are answered: a stage that maps row by row (no
    group_by) starts on those while the upstream's other jobs still work."""
    return any(s.status is ShardStatus.DONE for s in up.store.load(up.name).shards.values())


def records(p: LoadedPipeline) -> Iterator[Record]:
    """The stage's records: its upstream's answered rows, filtered by `where`, grouped by
    `group_by`. Numbered from 1 in the upstream's order, under the name `pipeline:<upstream>`.
    While the upstream still works, a group is a record only once none of its rows waits for
    an answer (a row whose group cannot be told before its answer holds every group back)."""
    source = p.spec.source
    up: Upstream = p.upstream
    uri = f"pipeline:{up.name}"
    where = TEMPLATES.compile_expression(source.where) if source.where else None
    if source.group_by is None:
        rows = (row for row in upstream_rows(up) if row.get("error") is None)
        for n, row in enumerate(rows, 1):
            if where is None or _true(where, row, uri, n):
                yield Record(uri, n, row)
        return
    group = TEMPLATES.from_string(source.group_by)
    finished = upstream_ready(up) is None
    groups: dict[str, list[dict[str, Any]]] = {}  # held whole: a group is known once every row is read
    first: dict[str, int] = {}
    waiting: set[str] = set()  # groups with a row still to be answered
    for n, row in enumerate(upstream_rows(up), 1):
        pending = not finished and unanswered(row)
        if row.get("error") is not None and not pending:
            continue  # failed for good: reported upstream
        try:
            value = group.render(row).strip()
        except Exception as exc:  # noqa: BLE001 - any template error names the row it came from
            if pending:
                return  # its group is unknown until it is answered: every group may be incomplete
            raise SourceError(f"source.group_by: {exc}", uri=uri, line=n) from None
        if pending:
            waiting.add(value)
        elif where is None or _true(where, row, uri, n):
            groups.setdefault(value, []).append(row)
            first.setdefault(value, n)
    for value, members in groups.items():
        if value not in waiting:
            yield Record(uri, first[value], {"group": value, "rows": members})


def judged(p: LoadedPipeline) -> Iterator[Record]:
    """A judge's records: for each answered row of its variant, the variant's record with
    `key`, `answer` (the answer to grade, `score.answer` over the row) and `expected`."""
    from ..output.scores import Scorer

    up: Upstream = p.upstream
    scorer = Scorer(up.pipeline)
    for n, (record, row) in enumerate(rows_with_records(up), 1):
        if row.get("error") is None:
            yield Record(f"pipeline:{up.name}", n, scorer.judged(record, row))


def _true(where, row: dict[str, Any], uri: str, line: int) -> bool:
    try:
        return bool(where(**row))
    except Exception as exc:  # noqa: BLE001 - any expression error names the row it came from
        raise SourceError(f"source.where: {exc}", uri=uri, line=line) from None


def rows_with_records(up: Upstream, *, plain: bool = True) -> Iterator[tuple[Record, dict[str, Any]]]:
    """Each of the upstream's rows with the record it was made from (a score's reference is
    rendered from the record): the join gives one row per record, in the source's order."""
    from .reconcile import records as source_records

    return zip(source_records(up.pipeline), upstream_rows(up, plain=plain), strict=True)


def upstream_rows(up: Upstream, *, plain: bool = True) -> Iterator[dict[str, Any]]:
    """The upstream's rows as its output holds them (key, kept columns, then its result
    columns, or `error`), in its source's order. A stage leaves the error rows out: an upstream
    error is reported where it happened, and the upstream's error policy applies there.
    `plain`: JSON values only, as a stage's records are; else as the join gives them to a sink."""
    from ..output.join import RowForm
    from ..prepare import order
    from ..prepare.parallel import join_source
    from .reconcile import order_file
    from .reconcile import records as source_records

    state = up.store.load(up.name)
    failed = {s.id: s for s in state.shards.values() if s.status is ShardStatus.FAILED}
    with contextlib.closing(up.store.index(up.name, readonly=True)) as index:
        batches = join_source(
            up.pipeline,
            source_records(up.pipeline),
            index,
            lambda shard: up.store.fetch(up.store.result_path(up.name, shard)),
            failed,
            order_file(up.pipeline, up.store, state, state.scan_memo),  # keys and hashes, not renders
            RowForm(),
        )
        try:
            for batch in batches:
                assert isinstance(batch.out, list)  # RowForm(): rows as dicts
                yield from map(_plain, batch.out) if plain else batch.out
        except order.StaleOrder as exc:
            exc.path.unlink(missing_ok=True)  # the next apply renders the source instead
            raise SourceError(
                "the source changed while its rows were read; run apply again", uri=f"pipeline:{up.name}"
            ) from None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row as a stage's record: JSON values only, as a JSONL output would hold them."""
    return json.loads(json.dumps(row, default=str))
