"""Evals, the gathering half: a matrix or scored spec's variants (and their judges) written as
one long-form output, with a column per matrix axis and the score of each answer.

The members run as pipelines of their own; their states hold the results. Once none of them
has work in progress, the group's output is written from those states, under a lock and a
state document of its own (`NAME:output`) that records which results it was written from, so
`plan` and `apply` know when it is out of date, as they know it of one pipeline's output.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BatchflowError, OutputError
from ..output.columns import COLUMNS, Column, columns_for
from ..output.join import FAILED_KEYS_KEPT
from ..output.scores import Scorer, verdict
from ..output.sinks import Layout, open_sink, output_format
from ..spec.matrix import output_state
from ..spec.models import LoadedPipeline, Pipeline
from ..spec.pricing import usd
from ..spec.project import Stores
from ..state.store import OutputRecord, now
from .graph import Upstream, rows_with_records, upstream_rows
from .reconcile import results_fingerprint

if TYPE_CHECKING:
    from ..output.report import Report
    from ..spec.pricing import PriceTable
    from .review import PipelinePlan


@dataclass(frozen=True)
class Group:
    """The pipelines one matrix or scored spec became."""

    name: str
    variants: list[LoadedPipeline]
    judges: dict[str, LoadedPipeline]  # by the name of the variant each judges

    @property
    def members(self) -> list[LoadedPipeline]:
        return [*self.variants, *self.judges.values()]

    @property
    def spec(self) -> Pipeline:
        return self.variants[0].spec

    @property
    def first(self) -> LoadedPipeline:
        return self.variants[0]


def groups(pipelines: list[LoadedPipeline]) -> list[Group]:
    """The groups whose members (every variant, and its judge) are all among `pipelines`, in
    the order they come: a `--target` of one variant applies it, not its spec's output."""
    found: dict[str, Group] = {}
    for p in pipelines:
        if p.member is None:
            continue
        group = found.setdefault(p.member.group, Group(p.member.group, [], {}))
        if p.member.judge:
            group.judges[p.spec.source.pipeline or ""] = p
        else:
            group.variants.append(p)
    return [g for g in found.values() if g.variants and complete(g)]


def complete(group: Group) -> bool:
    first = group.first
    assert first.member is not None
    judged = first.spec.score is not None and first.spec.score.judge is not None
    return len(group.variants) == first.member.variants and (
        not judged or len(group.judges) == len(group.variants)
    )


def stamp(group: Group, stores: Stores) -> str:
    """Which results the group's output is made of: each member's, and the settings that shape
    the rows (the output, the score, the axes)."""
    parts: list[Any] = [group.spec.output.model_dump(), group.spec.errors.model_dump()]
    parts.append(group.spec.score.model_dump() if group.spec.score else None)
    for p in group.members:
        st = stores.of(p).load(p.name)
        parts.append(
            [p.name, results_fingerprint(st), st.output.digest if st.output else None, st.retry_round]
        )
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def output_due(group: Group, stores: Stores) -> bool:
    record = stores.of(group.first).load(output_state(group.name)).output
    return record is None or record.results != stamp(group, stores)


# The columns the long form adds after the result columns (their Parquet types).
SCORE_COLUMNS = {"expected": "string", "score": "float64", "reason": "string"}


def layout(group: Group) -> Layout:
    """The long form's columns: key, the axes, the kept columns, every result column any variant
    has (in the order of COLUMNS, as one pipeline's output), then the score columns."""
    names = {c.name for p in group.variants for c in columns_for(p.spec)}
    columns = [c for c in COLUMNS if c.name in names]
    score = group.spec.score
    if score is not None:
        wanted = {"expected": score.expected is not None, "score": True, "reason": score.judge is not None}
        columns += [
            Column(name, "score", name, lambda s: True, functools.partial(_arrow, kind))
            for name, kind in SCORE_COLUMNS.items()
            if wanted[name]
        ]
    axes = tuple(column for column, _ in group.first.member.axes) if group.first.member else ()
    return Layout((*axes, *group.spec.output.columns), tuple(columns), group.spec)


def _arrow(kind: str, spec: Any):
    import pyarrow as pa

    return getattr(pa, kind)()


def rows(group: Group, stores: Stores) -> Iterator[tuple[LoadedPipeline, dict[str, Any]]]:
    """Every row of the long form, variant by variant in the matrix's order: the variant's
    output row with its axes, its reference and its score (a metric's, or its judge's verdict)."""
    score = group.spec.score
    for variant in group.variants:
        axes = dict(variant.member.axes) if variant.member else {}
        store = stores.of(variant)
        judge = group.judges.get(variant.name)
        verdicts = (
            {r["key"]: r for r in upstream_rows(Upstream(judge, stores.of(judge)))}
            if judge is not None
            else {}
        )
        up = Upstream(variant, store)
        if score is None:
            pairs: Iterator[tuple[Any, dict[str, Any]]] = (
                (None, row) for row in upstream_rows(up, plain=False)
            )
        else:
            scorer = Scorer(variant)
            pairs = rows_with_records(up, plain=False)  # for a sink, as any output's rows
        for record, row in pairs:
            out = {"key": row.pop("key"), **axes, **row}
            if score is not None:
                out["expected"] = scorer.expected(record)
                if judge is None:
                    out["score"] = scorer.metric(record, row)
                elif "error" not in row:
                    out["score"], out["reason"] = verdict(verdicts.get(out["key"]))
            yield variant, {k: v for k, v in out.items() if v is not None}


def write(group: Group, stores: Stores) -> OutputRecord | None:
    """Write the group's long-form output if the members' results changed since it was last
    written; the record of what was written, or None when it was current."""
    store = stores.of(group.first)
    name = output_state(group.name)
    spec = group.spec
    uri = group.first.resolve(spec.output.uri)
    out_format = output_format(uri, spec.output.format)
    assert out_format is not None  # validate refuses an output whose format it cannot tell
    with store.lock(name):
        state = store.load(name)
        mark = stamp(group, stores)  # before the rows are read: results that come later rewrite it
        if state.output is not None and state.output.results == mark:
            return None
        shape = layout(group)
        errors = 0
        failed: list[str] = []
        try:
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(open_sink(uri, out_format, shape))
                err = (
                    stack.enter_context(open_sink(group.first.resolve(spec.errors.uri), "jsonl", shape))
                    if spec.errors.uri
                    else out
                )
                for _, row in rows(group, stores):
                    if "error" in row:
                        errors += 1
                        if len(failed) < FAILED_KEYS_KEPT:
                            failed.append(row["key"])
                        err.write(row)
                    else:
                        out.write(row)
                count = out.count + (err.count if err is not out else 0)
        except OSError as exc:
            raise OutputError(f"{uri}: cannot write the output: {exc}") from None
        state.output = OutputRecord(
            uri=spec.output.uri,
            digest=mark,
            results=mark,
            records=count,
            errors=errors,
            failed_keys=failed,
            written_at=now(),
        )
        store.save(state)
        return state.output


def settled(group: Group, done: dict[str, bool]) -> bool:
    """Whether none of the group's members has work left in this run."""
    return all(done.get(p.name, True) for p in group.members)


def write_all(pipelines: list[LoadedPipeline], stores: Stores, done: dict[str, bool]):
    """Write the output of every group whose members are settled; (group, record or None, error)."""
    for group in groups(pipelines):
        if not settled(group, done):
            continue
        try:
            yield group, write(group, stores), None
        except BatchflowError as exc:
            yield group, None, exc


def report(pipelines: list[LoadedPipeline], stores: Stores, prices: PriceTable) -> Report:
    """Per variant of each group: answers, errors, mean score with its interval, tokens, cost,
    cost per correct answer, and whether it is on the Pareto front."""
    from ..output.report import GroupReport, Report, VariantReport, pareto, variant_report

    out = []
    for group in groups(pipelines):
        score = group.spec.score
        judge = score.judge if score is not None else None

        def figures(p: LoadedPipeline, answers: Iterable[dict[str, Any]]) -> VariantReport:
            shards = list(stores.of(p).load(p.name).shards.values())
            j = group.judges.get(p.name)  # noqa: B023 - used at once, in this round
            judged = (j.spec.model, list(stores.of(j).load(j.name).shards.values())) if j else None
            return variant_report(
                p.name,
                dict(p.member.axes) if p.member else {},
                p.spec.model,
                answers,
                shards,
                judged,
                prices,
                judge.pass_score if judge is not None else 1.0,  # noqa: B023 - likewise
            )

        # The rows come variant by variant: each variant's figures are made as its rows stream by.
        by_name = {p.name: p for p in group.variants}
        made = {
            name: figures(by_name[name], (row for _, row in pairs))
            for name, pairs in itertools.groupby(rows(group, stores), key=lambda pair: pair[0].name)
        }
        variants = [made.get(p.name) or figures(p, ()) for p in group.variants]
        pareto(variants)
        if score is None:
            scoring = "nothing (no score:)"
        elif judge is not None:
            scoring = f"a judge ({judge.model}; correct at {judge.pass_score:g} or more)"
        else:
            scoring = f"the {score.metric} metric"
        out.append(
            GroupReport(
                name=group.name,
                spec=str(group.first.path),
                scoring=scoring,
                axes=[column for column, _ in group.first.member.axes] if group.first.member else [],
                variants=variants,
            )
        )
    return Report(created_at=now(), prices=f"{prices.checked}, {prices.source}", groups=out)


def total_breach(group: Group, plans: dict[str, PipelinePlan]) -> str | None:
    """Why the variants' new requests together break the matrix's `budget.total_usd`; None if
    they do not (a judge's requests are known once answers are in: its own `max_usd` holds it)."""
    budget = group.spec.budget
    if budget is None or budget.total_usd is None:
        return None
    estimates = [pp.estimate for p in group.variants if (pp := plans.get(p.name)) and pp.estimate]
    if not estimates:
        return None
    if any(e.usd is None for e in estimates):
        return "cannot check budget.total_usd: a variant's model has no price (add it with BATCHFLOW_PRICES)"
    total = sum(e.usd or 0 for e in estimates)
    if total <= budget.total_usd:
        return None
    requests = sum(e.requests for e in estimates)
    return (
        f"estimated cost {usd(total, apart_from=budget.total_usd)} for the {requests:,} new requests of "
        f"{len(estimates)} variants is over budget.total_usd {usd(budget.total_usd, apart_from=total)}"
    )
