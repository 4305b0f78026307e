"""The Python API: what `batchflow plan` and `apply` do, as library calls returning typed results.

    import batchflow

    project = batchflow.load(["pipelines"], state="gs://my-bucket/batchflow")
    the_plan = project.plan(max_usd=25)
    if the_plan.has_changes:
        result = project.apply(wait=True, max_usd=25)
        assert result.ok, result.errors

The command line parses its flags, calls these, and prints what they return. Errors that stop a
whole call are exceptions under `BatchflowError`; a pipeline that cannot go on is reported in
its own result (`PipelinePlan.error`, `Outcome.error`) while the others go on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BatchflowError

if TYPE_CHECKING:
    from .backends import Backends
    from .output.report import Report as EvalReport
    from .run.act import Outcome, Report
    from .run.progress import Reporter
    from .run.review import PipelinePlan, Plan, PlanOptions
    from .settings import Settings
    from .spec.datacheck import RecordCheck
    from .spec.models import LoadedPipeline
    from .spec.project import Stores
    from .state.store import StateStore

OnError = Callable[["LoadedPipeline", str], None]
Say = Callable[[str, str], None]  # (pipeline, message): what cancel and destroy did, as they do it


def load(
    paths: Sequence[str | Path] | None = None,
    *,
    targets: list[str] | None = None,
    settings: Settings | None = None,
    strict: bool = False,
    **overrides,
) -> Project:
    """The pipelines of `paths` (spec files or folders; default: the project's). Settings come
    from `BATCHFLOW_*` and `.env` as for the command, with `overrides` on top (`state=`,
    `api_base_url=`, ...), or as given. Spec files that do not load are in `Project.problems`
    (with `strict`, they raise SpecErrors instead); `targets` keeps only the pipelines named."""
    from .errors import SpecErrors
    from .run.graph import link, with_upstreams
    from .settings import Settings
    from .spec.loader import load_each
    from .spec.project import default_paths

    config = settings or Settings(**{k: v for k, v in overrides.items() if v is not None})
    specs = [Path(p) for p in paths] if paths else default_paths(Path.cwd())
    found, problems = load_each(specs, config.backend)
    found, unlinked = link(found, stores_of(config))
    problems += unlinked
    if strict and problems:
        raise SpecErrors(problems)
    if targets:
        groups = {p.member.group for p in found if p.member}
        unknown = sorted(set(targets) - {p.name for p in found} - groups)
        if unknown:
            names = ", ".join(sorted({p.member.group if p.member else p.name for p in found})) or "none"
            raise BatchflowError(f"--target {', '.join(unknown)}: no such pipeline (found: {names})")
        # A matrix's name stands for its variants and judges; a stage's upstream comes along.
        named = [p.name for p in found if p.name in targets or (p.member and p.member.group in targets)]
        wanted = with_upstreams(found, named)
        found = [p for p in found if p.name in wanted]
    return Project(found, [str(problem) for problem in problems], config, list(targets or []))


def stores_of(settings: Settings) -> Stores:
    from .spec.project import Stores

    return Stores(settings.state, lock_ttl=settings.lock_ttl, lock_timeout=settings.lock_timeout)


@dataclass
class ApplyResult:
    outcomes: list[Outcome]
    problems: list[str] = field(default_factory=list)  # spec files that could not be loaded

    @property
    def errors(self) -> dict[str, str]:
        """Why each pipeline that stopped stopped."""
        return {o.pipeline: o.error for o in self.outcomes if o.error}

    @property
    def failed(self) -> dict[str, str]:
        """Pipelines whose failed requests break their errors policy (`apply` exits 3)."""
        return {o.pipeline: o.failed for o in self.outcomes if o.failed}

    @property
    def ok(self) -> bool:
        return not (self.problems or self.errors or self.failed)

    def raise_for_errors(self) -> ApplyResult:
        """Raise unless `ok`, as an orchestrator's task should fail: the error itself when one
        pipeline stopped (a BudgetError, LockedError, RemoteError, SourceError...), a
        PolicyError when failed requests break an errors policy, else a BatchflowError naming
        every problem. Returns the result when it is ok."""
        from .errors import PolicyError

        stopped = [o.exception for o in self.outcomes if o.exception is not None]
        if len(stopped) == 1 and not (self.problems or self.failed):
            raise stopped[0]
        if self.failed and not (self.problems or self.errors):
            raise PolicyError("; ".join(f"{p}: {why}" for p, why in self.failed.items()))
        if not self.ok:
            problems = [*self.problems, *(f"{p}: {e}" for p, e in {**self.errors, **self.failed}.items())]
            raise BatchflowError("; ".join(problems))
        return self


@dataclass
class Project:
    pipelines: list[LoadedPipeline]
    problems: list[str]  # the problems of spec files that could not be loaded
    settings: Settings
    targets: list[str] = field(default_factory=list)  # the pipelines asked for, when not all

    def validate(self, max_bytes: int | None = None) -> dict[str, RecordCheck]:
        """Render every record of each pipeline's local source as apply would, with no network
        (up to `max_bytes` of a source, default `BATCHFLOW_VALIDATE_MAX_BYTES`); raises
        SpecErrors naming the data file and line of each record apply would refuse."""
        from .errors import SourceError, SpecError, SpecErrors
        from .spec.datacheck import check_records

        limit = self.settings.validate_max_bytes if max_bytes is None else max_bytes
        checked, problems = {}, []
        for p in self.pipelines:
            try:
                checked[p.name] = check_records(p, limit)
            except SourceError as exc:  # reported where validate reports problems: at the data's line
                problems.append(SpecError(exc.message, file=_relative(exc.uri), line=exc.line))
        if problems:
            raise SpecErrors(problems)
        return checked

    def plan(
        self,
        *,
        allow_shrink: bool = False,
        retry_errors: bool = False,
        max_usd: float | None = None,
        max_concurrent_jobs: int | None = None,
        count_tokens: bool = False,
        on_error: OnError = lambda pipeline, message: None,
    ) -> Plan:
        """What `apply` would do now with these options, what it sends and what that costs."""
        from .run.review import PlanOptions

        options = PlanOptions(
            allow_shrink=allow_shrink,
            retry_errors=retry_errors,
            max_usd=max_usd,
            max_concurrent_jobs=max_concurrent_jobs,
            targets=self.targets,
        )
        the_plan = plan_pipelines(self.pipelines, self.settings, options, count_tokens, on_error)
        the_plan.unloaded = list(self.problems)
        return the_plan

    def apply(
        self,
        *,
        wait: bool = False,
        allow_shrink: bool = False,
        retry_errors: bool = False,
        max_usd: float | None = None,
        max_concurrent_jobs: int | None = None,
        report: Report = lambda pipeline, action, message: None,
        warn: Callable[[str, str], None] = lambda pipeline, message: None,
        progress: Reporter | None = None,
        pause: Callable[[float, list[Outcome]], None] | None = None,
    ) -> ApplyResult:
        """Take every action that can be taken now; with `wait`, until every pipeline is done."""
        from .errors import BudgetError
        from .run.act import Outcome, apply_all
        from .spec.pricing import load_prices

        stores = self._stores()
        refused = self._over_totals()  # before anything of theirs is sent
        outcomes = apply_all(
            [p for p in self.pipelines if not (p.member and p.member.group in refused)],
            stores,
            self._backends(stores),
            report,
            wait=wait,
            allow_shrink=allow_shrink,
            retry_errors=retry_errors,
            max_concurrent_jobs=max_concurrent_jobs,
            prices=load_prices(self.settings.prices),
            max_usd=max_usd,
            progress=progress,
            poll_interval=self.settings.poll_interval,
            warn=warn,
            pause=pause or (lambda seconds, outcomes: time.sleep(seconds)),
        )
        for p in self.pipelines:
            if p.member and (why := refused.get(p.member.group)):
                outcomes.append(Outcome(p.name, done=True, error=why, exception=BudgetError(why)))
        return ApplyResult(outcomes + self._write_groups(stores, outcomes, report), list(self.problems))

    def _over_totals(self) -> dict[str, str]:
        """The matrices whose variants' new requests together break their budget.total_usd."""
        from .run.evals import groups, total_breach
        from .run.review import PlanOptions

        capped = [g for g in groups(self.pipelines) if g.spec.budget and g.spec.budget.total_usd]
        if not capped:
            return {}
        planned = plan_pipelines([p for g in capped for p in g.variants], self.settings, PlanOptions())
        plans = {pp.pipeline: pp for pp in planned.pipelines}
        return {g.name: why for g in capped if (why := total_breach(g, plans))}

    def _write_groups(self, stores: Stores, outcomes: list[Outcome], report: Report) -> list[Outcome]:
        """The long-form outputs of the matrix and scored specs whose members are all settled."""
        from .run.act import Outcome
        from .run.evals import write_all
        from .run.reconcile import Action, Kind
        from .spec.units import plural

        done = {o.pipeline: o.done for o in outcomes}
        out = []
        for group, record, error in write_all(self.pipelines, stores, done):
            outcome = Outcome(group.name, done=True)
            if error is not None:
                outcome.error, outcome.exception = str(error), error
            elif record is not None:
                outcome.actions = 1
                n = len(group.variants)
                report(
                    group.name,
                    Action(Kind.OUTPUT, None, ""),
                    f"{record.records} rows of {n} {plural(n, 'variant')}",
                )
            out.append(outcome)
        return out

    def status(self) -> list[dict]:
        """Each pipeline's records, requests sent, shards, jobs, tokens, cost and output, from
        its state store (the rows `batchflow status --json` prints, whose names are stable)."""
        from collections import Counter

        from .spec.pricing import load_prices, shards_cost

        stores, prices = self._stores(), load_prices(self.settings.prices)
        report = []
        for p in self.pipelines:
            st = stores.of(p).load(p.name)
            o = st.output
            shards = list(st.shards.values())
            tokens = {
                kind: sum(s.usage.get(kind, 0) for s in shards) for kind in ("prompt", "output", "cached")
            }
            report.append(
                {
                    "pipeline": p.name,
                    "labels": p.spec.labels,
                    "records": st.records,
                    # Every request sent, a request sent again (a retry) counting once more.
                    "requests": sum(s.requests * (s.attempt - _no_job_yet(s)) for s in shards),
                    "shards": {str(k): v for k, v in Counter(s.status.value for s in shards).items()},
                    "waiting_for_quota": sum(bool(s.quota_refused_at) and _no_job_yet(s) for s in shards),
                    "calls": _calls(stores.of(p), p.name, shards),
                    "tokens": tokens,
                    # At the prices of the tier each shard went on; None for a model with no price.
                    "cost_usd": shards_cost(prices, p.spec.model, shards),
                    "jobs": [
                        {
                            "name": s.job_name,
                            "state": s.job_state,
                            "shard": s.id,
                            "attempt": s.attempt,
                            "error": s.error.model_dump() if s.error else None,
                        }
                        for s in shards
                        if s.job_name
                    ],
                    "output": o.model_dump() if o else None,
                    "errors_uri": p.spec.errors.uri or p.spec.output.uri,
                    "policy": p.spec.errors.exceeded(o.errors, o.records) if o else None,
                }
            )
        return report + _group_status(self.pipelines, stores, report)

    def report(self) -> EvalReport:
        """Per variant of each matrix or scored spec: records answered, errors, mean score with
        its 95% interval, tokens, cost, cost per correct answer, and the Pareto front of score
        against cost (`batchflow report`; `output.report.dumps` gives markdown, JSON or HTML)."""
        from .run.evals import report
        from .spec.pricing import load_prices

        return report(self.pipelines, self._stores(), load_prices(self.settings.prices))

    def cancel(self, say: Say = lambda pipeline, message: None) -> int:
        """Cancel every running job of the pipelines; returns how many. A later apply collects
        what they finished and sends the rest again."""
        from .run.teardown import cancel

        stores = self._stores()
        return cancel(self.pipelines, stores, self._backends(stores), say)

    def destroy(self, say: Say = lambda pipeline, message: None) -> None:
        """Delete the jobs, files and caches the pipelines made on the service, then their
        state. Outputs are kept."""
        from .run.evals import groups
        from .run.teardown import destroy
        from .spec.matrix import output_state

        stores = self._stores()
        destroy(self.pipelines, stores, self._backends(stores), say)
        for group in groups(self.pipelines):  # what the long-form output was written from
            stores.of(group.first).forget(output_state(group.name))

    def unlock(self) -> dict[str, bool]:
        """Remove each pipeline's lock (left by an apply killed on another machine): whether
        there was one. Only when no apply of these pipelines is running."""
        from .run.evals import groups
        from .spec.matrix import output_state

        stores = self._stores()
        unlocked = {p.name: stores.of(p).unlock(p.name) for p in self.pipelines}
        for group in groups(self.pipelines):  # the lock its long-form output is written under
            name = output_state(group.name)
            unlocked[name] = stores.of(group.first).unlock(name)
        return unlocked

    def _stores(self) -> Stores:
        return stores_of(self.settings)

    def _backends(self, stores: Stores) -> Backends:
        from .backends import Backends

        return Backends(self.settings, stores)


def _group_status(pipelines: list[LoadedPipeline], stores: Stores, members: list[dict]) -> list[dict]:
    """A row per matrix or scored spec: its members' sums, and its long-form output."""
    from .run.evals import groups
    from .spec.matrix import output_state

    rows = {r["pipeline"]: r for r in members}
    out = []
    for group in groups(pipelines):
        mine = [rows[p.name] for p in group.members]
        costs = [r["cost_usd"] for r in mine]
        o = stores.of(group.first).load(output_state(group.name)).output
        out.append(
            {
                "pipeline": group.name,
                "variants": [p.name for p in group.variants],
                "judges": [p.name for p in group.judges.values()],
                "labels": group.spec.labels,
                "records": None,
                "requests": sum(r["requests"] for r in mine),
                "shards": {},
                "waiting_for_quota": 0,
                "calls": None,
                "tokens": {k: sum(r["tokens"][k] for r in mine) for k in ("prompt", "output", "cached")},
                "cost_usd": None if None in costs else sum(costs),
                "jobs": [],
                "output": o.model_dump() if o else None,
                "errors_uri": group.spec.errors.uri or group.spec.output.uri,
                "policy": None,
            }
        )
    return out


def _relative(path: str) -> str:
    """A path under the current folder, as the user would type it; any other as it is."""
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(Path.cwd()))
    return path


def _calls(store: StateStore, pipeline: str, shards: list) -> dict[str, int] | None:
    """Flex calls under way: the answers saved so far of the shards whose calls are not all done."""
    from .state.store import ShardStatus

    sending = [s for s in shards if s.tier and s.status is ShardStatus.PREPARED]
    if not sending:
        return None
    answered = 0
    for s in sending:
        path = store.result_path(pipeline, s.id)
        part = store.fetch(path.with_name(path.name + ".part"))
        answered += part.read_bytes().count(b"\n") if part.exists() else 0
    return {"answered": answered, "requests": sum(s.requests for s in sending)}


def _no_job_yet(shard) -> bool:
    """Whether a shard's current attempt has no job yet (so it was not sent)."""
    from .state.store import ShardStatus

    return shard.status in (ShardStatus.PREPARED, ShardStatus.UPLOADED, ShardStatus.CREATING)


def plan_pipelines(
    pipelines: list[LoadedPipeline],
    settings: Settings,
    options: PlanOptions,
    count_tokens: bool = False,
    on_error: OnError = lambda pipeline, message: None,
) -> Plan:
    """The plan of each pipeline; one that cannot be planned carries its error (and `on_error`
    hears of it), the others are planned."""
    from .backends import Backends, confirm_model
    from .output.sinks import check_writable
    from .run import review
    from .run.reconcile import Rules, check_shrink, output_uris, plan, scan
    from .spec.pricing import load_prices
    from .state.store import now

    prices = load_prices(settings.prices)
    stores = stores_of(settings)
    backends = Backends(settings, stores)  # made on first use: only --count-tokens and new models
    planned: list[review.PipelinePlan] = []
    for p in pipelines:
        try:
            if p.upstream is not None and (why := _waits(p, planned)):
                planned.append(review.waiting_plan(p, why))
                continue
            for uri in output_uris(p):
                check_writable(uri, probe=False)
            confirm_model(p, backends(p))
            store = stores.checked(p)
            st = store.load(p.name)
            with contextlib.closing(store.index(p.name, readonly=True)) as index:
                desired = scan(p, st, store, index, write=False, retry_errors=options.retry_errors)
            check_shrink(p, st, desired, options.allow_shrink)
            rules = Rules.of(
                p, max_concurrent_jobs=options.max_concurrent_jobs, takes_inline=backends.takes_inline(p)
            )
            actions = plan(st, desired, rules, p.spec.output.uri)
            pp = review.pipeline_plan(p, actions, desired, st, prices, options.max_usd)
            if count_tokens and pp.estimate and desired.sample:
                review.count_sample(pp, p, desired, backends(p), prices, options.max_usd)
        except (BatchflowError, OSError) as exc:  # this pipeline cannot be planned; the others can
            on_error(p, str(exc))
            pp = review.PipelinePlan(pipeline=p.name, spec=str(p.path), error=str(exc))
        planned.append(pp)
    planned += _group_plans(pipelines, stores, planned)
    return review.Plan(
        created_at=now(),
        prices=f"{prices.checked}, {prices.source}",
        options=options,
        pipelines=planned,
    )


def _group_plans(
    pipelines: list[LoadedPipeline], stores: Stores, planned: list[PipelinePlan]
) -> list[PipelinePlan]:
    """A matrix or scored spec's long-form output: written again once its members' actions are
    taken, or now if their results changed since it was written."""
    from .run import review
    from .run.evals import groups, output_due, total_breach
    from .spec.pricing import usd
    from .spec.units import plural

    plans = {pp.pipeline: pp for pp in planned}
    out = []
    for group in groups(pipelines):
        mine = [plans[p.name] for p in group.members if p.name in plans]
        acting = any(a.kind != "hold" for pp in mine for a in pp.actions)
        try:
            due = acting or output_due(group, stores)
        except (BatchflowError, OSError) as exc:
            out.append(review.PipelinePlan(pipeline=group.name, spec=str(group.first.path), error=str(exc)))
            continue
        n = len(group.variants)
        reason = f"the long form of {n} {plural(n, 'variant')} to {group.spec.output.uri}"
        costs = [pp.estimate.usd for pp in mine if pp.estimate]
        if costs:
            total = "?" if None in costs else usd(sum(c for c in costs if c is not None))
            reason += f", once they are done; their new requests cost ~{total} in all"
        actions = [review.PlannedAction(kind="output", symbol="+", shard=None, reason=reason)] if due else []
        why = total_breach(group, plans)
        out.append(
            review.PipelinePlan(
                pipeline=group.name,
                spec=str(group.first.path),
                actions=actions,
                budget_usd=group.spec.budget.total_usd if group.spec.budget else None,
                over_budget=why is not None,
                budget_message=why,
            )
        )
    return out


def _waits(p: LoadedPipeline, planned: list[PipelinePlan]) -> str | None:
    """Why a stage's plan cannot be known yet: its upstream has work to do first and none of its
    answers is in (they decide this stage's requests), could not be planned, or, out of this
    plan, has not finished."""
    from .run.graph import answered, upstream_ready
    from .spec.units import plural

    up = p.upstream
    upp = next((pp for pp in planned if pp.pipeline == up.name), None)
    if upp is None:
        return upstream_ready(up)
    if upp.error:
        return f"waits for {up.name}, which cannot be planned"
    if not upp.actions or answered(up):
        return None
    new = upp.estimate.requests if upp.estimate else 0
    may = f"up to {new:,} of its records may change" if new else "its records may change"
    actions = f"{len(upp.actions)} {plural(len(upp.actions), 'action')} there"
    return f"waits for {up.name} ({actions}); then {may}, and its cost is known"


def check_saved_plan(saved: Plan, settings: Settings) -> list[LoadedPipeline]:
    """The pipelines of a saved plan that have actions, once each is shown to be as it was when
    planned; raises BatchflowError naming what changed otherwise."""
    from .errors import SpecErrors
    from .run import review
    from .run.graph import link
    from .spec.loader import load_pipelines

    problems = [f"{pp.pipeline}: it could not be planned ({pp.error})" for pp in saved.pipelines if pp.error]
    pipelines = load_pipelines([Path(pp.spec) for pp in saved.pipelines if not pp.error], settings.backend)
    pipelines, unlinked = link(pipelines, stores_of(settings))
    if unlinked:
        raise SpecErrors(unlinked)
    now_plan = plan_pipelines(pipelines, settings, saved.options)
    current = {pp.pipeline: pp for pp in now_plan.pipelines}
    for pp in saved.pipelines:
        if not pp.error and (why := review.changed(pp, current[pp.pipeline])):
            problems.append(f"{pp.pipeline}: {why}")
    if problems:
        raise BatchflowError("the saved plan is out of date, run plan again: " + "; ".join(problems))
    # A matrix's members come along with any of them that acts (or its output): its output is
    # written from all of them.
    acting = {p.member.group for p in pipelines if p.member and current[p.name].actions}
    acting |= {name for name, pp in current.items() if pp.actions}
    return [p for p in pipelines if current[p.name].actions or (p.member and p.member.group in acting)]
