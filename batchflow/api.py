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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BatchflowError

if TYPE_CHECKING:
    from .apply import Outcome, Report
    from .progress import Reporter
    from .review import Plan, PlanOptions
    from .settings import Settings
    from .spec import LoadedPipeline

OnError = Callable[["LoadedPipeline", str], None]


def load(
    paths: list[str | Path] | None = None,
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
    from .loader import load_each
    from .project import default_paths
    from .settings import Settings

    config = settings or Settings(**{k: v for k, v in overrides.items() if v is not None})
    specs = [Path(p) for p in paths] if paths else default_paths(Path.cwd())
    found, problems = load_each(specs, config.backend)
    if strict and problems:
        raise SpecErrors(problems)
    if targets:
        unknown = sorted(set(targets) - {p.name for p in found})
        if unknown:
            names = ", ".join(sorted(p.name for p in found)) or "none"
            raise BatchflowError(f"--target {', '.join(unknown)}: no such pipeline (found: {names})")
        found = [p for p in found if p.name in targets]
    return Project(found, [str(problem) for problem in problems], config, list(targets or []))


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


@dataclass
class Project:
    pipelines: list[LoadedPipeline]
    problems: list[str]  # the problems of spec files that could not be loaded
    settings: Settings
    targets: list[str] = field(default_factory=list)  # the pipelines asked for, when not all

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
        from .review import PlanOptions

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
        from .apply import apply_all
        from .backends import Backends
        from .pricing import load_prices
        from .project import Stores

        stores = Stores(
            self.settings.state, lock_ttl=self.settings.lock_ttl, lock_timeout=self.settings.lock_timeout
        )
        outcomes = apply_all(
            self.pipelines,
            stores,
            Backends(self.settings, stores),
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
        return ApplyResult(outcomes, list(self.problems))

    def status(self) -> list[dict]:
        """Each pipeline's records, requests sent, shards, jobs, tokens, cost and output, from
        its state store (the rows `batchflow status --json` prints, whose names are stable)."""
        from collections import Counter

        from .pricing import Tokens, load_prices
        from .project import Stores

        stores, prices = Stores(self.settings.state), load_prices(self.settings.prices)
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
                    "tokens": tokens,
                    # At Batch Mode prices from the catalog; None for a model with no price.
                    "cost_usd": prices.cost(p.spec.model, Tokens.from_usage(tokens)),
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
        return report


def _no_job_yet(shard) -> bool:
    """Whether a shard's current attempt has no job yet (so it was not sent)."""
    from .state import ShardStatus

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
    from . import review
    from .backends import Backends, confirm_model
    from .pricing import load_prices
    from .project import Stores
    from .reconcile import check_shrink, output_uris, plan, scan
    from .sinks import check_writable
    from .state import now

    prices = load_prices(settings.prices)
    stores = Stores(settings.state)
    backends = Backends(settings, stores)  # made on first use: only --count-tokens and new models
    planned = []
    for p in pipelines:
        try:
            for uri in output_uris(p):
                check_writable(uri, probe=False)
            confirm_model(p, backends(p))
            store = stores.checked(p)
            st = store.load(p.name)
            with contextlib.closing(store.index(p.name, readonly=True)) as index:
                desired = scan(p, st, store, index, write=False, retry_errors=options.retry_errors)
            check_shrink(p, st, desired, options.allow_shrink)
            actions = plan(st, desired, p.spec.retry.attempts, p.spec.output.uri)
            pp = review.pipeline_plan(p, actions, desired, st, prices, options.max_usd)
            if count_tokens and pp.estimate and desired.sample:
                review.count_sample(pp, p, desired, backends(p), prices, options.max_usd)
        except (BatchflowError, OSError) as exc:  # this pipeline cannot be planned; the others can
            on_error(p, str(exc))
            pp = review.PipelinePlan(pipeline=p.name, spec=str(p.path), error=str(exc))
        planned.append(pp)
    return review.Plan(
        created_at=now(),
        prices=f"{prices.checked}, {prices.source}",
        options=options,
        pipelines=planned,
    )


def check_saved_plan(saved: Plan, settings: Settings) -> list[LoadedPipeline]:
    """The pipelines of a saved plan that have actions, once each is shown to be as it was when
    planned; raises BatchflowError naming what changed otherwise."""
    from . import review
    from .loader import load_pipelines

    problems = [f"{pp.pipeline}: it could not be planned ({pp.error})" for pp in saved.pipelines if pp.error]
    pipelines = load_pipelines([Path(pp.spec) for pp in saved.pipelines if not pp.error], settings.backend)
    now_plan = plan_pipelines(pipelines, settings, saved.options)
    current = {pp.pipeline: pp for pp in now_plan.pipelines}
    for pp in saved.pipelines:
        if not pp.error and (why := review.changed(pp, current[pp.pipeline])):
            problems.append(f"{pp.pipeline}: {why}")
    if problems:
        raise BatchflowError("the saved plan is out of date, run plan again: " + "; ".join(problems))
    return [p for p in pipelines if current[p.name].actions]
