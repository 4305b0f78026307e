"""What `plan` shows a reviewer, as data: each pipeline's actions, what it would send and cost,
what a change pays for again; rendered as text, JSON or markdown, and saved for `apply FILE`.

The field names of `Plan` (and so of `plan --json`) are documented in docs/running.md and stable.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, field_validator

from ..errors import BatchflowError
from ..spec.models import LoadedPipeline
from ..spec.pricing import TIER_NAMES, PriceTable, Tokens, estimate_text, file_part_tokens, usd
from ..spec.tokens import CHARS_PER_TOKEN
from ..spec.units import plural
from ..state.store import PipelineState, ShardStatus
from .reconcile import Action, Rules, Scan, policy_breach

if TYPE_CHECKING:  # the SDK is imported only by commands that call the API
    from ..backends.base import Backend

ASSUMED_OUTPUT_TOKENS = 500  # per answer, before any answer was seen and without max_output_tokens
PLAN_FORMAT: Literal["batchflow-plan"] = "batchflow-plan"


class Estimate(BaseModel):
    """What the requests a plan would send cost, at the prices of the tier they go on."""

    tier: str = "batch"  # batch, flex, standard or priority: the prices below are that tier's

    requests: int
    input_tokens: int
    cached_tokens: int  # served from the context cache, at the cached price
    output_tokens: int
    input_basis: str  # "local estimate" or "countTokens on N requests"
    output_basis: Literal["observed", "max_output_tokens", "assumed", "none"]
    usd: float | None  # None: the model is not in the price table


class PlannedAction(BaseModel):
    kind: str
    symbol: str
    shard: str | None
    reason: str


class Fingerprint(BaseModel):
    """What a saved plan was made from: `apply FILE` refuses if any of it changed."""

    spec: str
    source: str
    state: str


class PipelinePlan(BaseModel):
    pipeline: str
    spec: str  # the spec file
    actions: list[PlannedAction] = []
    estimate: Estimate | None = None  # of the new requests; None when there are none
    resent_answered: int = 0  # requests answered before whose request changed: paid again
    superseded_requests: int = 0  # requests of jobs in flight the spec no longer wants (cancelled)
    superseded_usd: float | None = None  # what those would still cost if left to run
    budget_usd: float | None = None
    over_budget: bool = False  # apply would refuse: the estimate is over the budget, or unknown
    budget_message: str | None = None  # why, in words

    @field_validator("over_budget", mode="before")
    @classmethod
    def _old_plan(cls, value):
        return bool(value)  # a plan saved by batchflow 0.1 held the message here

    failed: str | None = None  # failed requests beyond the errors policy
    error: str | None = None  # why the pipeline could not be planned
    fingerprint: Fingerprint | None = None


class PlanOptions(BaseModel):
    """The flags a plan was made with; `apply FILE` applies with exactly these."""

    allow_shrink: bool = False
    retry_errors: bool = False
    max_usd: float | None = None  # --max-usd, over budget.max_usd
    max_concurrent_jobs: int | None = None  # --max-concurrent-jobs, over batch.max_concurrent_jobs
    targets: list[str] = []  # --target: the pipelines planned, when not all


class Plan(BaseModel):
    format: Literal["batchflow-plan"] = PLAN_FORMAT
    version: Literal[1] = 1
    created_at: str
    prices: str  # which price table: its date and source
    options: PlanOptions = PlanOptions()
    unloaded: list[str] = []  # problems of the spec files that could not be loaded
    pipelines: list[PipelinePlan]

    @property
    def has_changes(self) -> bool:
        return self.changes > 0

    @property
    def changes(self) -> int:
        return sum(a.kind != "hold" for p in self.pipelines for a in p.actions)


def fingerprint(p: LoadedPipeline, scan: Scan, state: PipelineState) -> Fingerprint:
    return Fingerprint(
        spec=hashlib.sha256(p.path.read_bytes()).hexdigest(),
        source=scan.digest,
        # (a state not yet saved gets a new random lineage each time it is read)
        state=hashlib.sha256(state.model_dump_json(exclude={"lineage"}).encode()).hexdigest(),
    )


def estimate(p: LoadedPipeline, scan: Scan, state: PipelineState, prices: PriceTable) -> Estimate | None:
    """The cost of the requests the scan found new, from local token estimates."""
    requests = sum(info.requests for info in scan.new_shards)
    if not requests:
        return None
    per_answer, basis = output_per_answer(p, state)
    cached = requests * estimate_text(scan.cache, scan.files) if scan.cache else 0
    tokens = Tokens(input=scan.new_tokens, output=requests * per_answer, cached=cached)
    tier = Rules.of(p).choose(requests)[0] or "batch"
    return Estimate(
        tier=tier,
        requests=requests,
        input_tokens=tokens.input,
        cached_tokens=tokens.cached,
        output_tokens=tokens.output,
        input_basis="local estimate",
        output_basis=basis,
        usd=prices.cost(p.spec.model, tokens, tier),
    )


def output_per_answer(p: LoadedPipeline, state: PipelineState) -> tuple[int, str]:
    """Output tokens to expect of an answer, and what that rests on."""
    answered = [s for s in state.shards.values() if s.status is ShardStatus.DONE]
    config = p.spec.request.generation_config if p.spec.request else None
    if p.spec.embed is not None:
        return 0, "none"
    if answered and (seen := sum(s.usage.get("output", 0) for s in answered)):
        return round(seen / sum(s.requests for s in answered)), "observed"
    if config and config.max_output_tokens:
        return config.max_output_tokens, "max_output_tokens"
    return ASSUMED_OUTPUT_TOKENS, "assumed"


def superseded_cost(
    p: LoadedPipeline, scan: Scan, state: PipelineState, prices: PriceTable
) -> tuple[int, float | None]:
    """Requests in the scan's superseded shards, and what they would cost if left to run: their
    input from the shard files' size, their output as `estimate` expects it, at the price of the
    model each was made for."""
    per_answer, _ = output_per_answer(p, state)
    requests, costs = 0, []
    for shard_id in scan.superseded:
        shard = state.shards[shard_id]
        requests += shard.requests
        tokens = Tokens(input=shard.bytes // CHARS_PER_TOKEN, output=shard.requests * per_answer)
        costs.append(prices.cost(shard.model or p.spec.model, tokens))
    known = [cost for cost in costs if cost is not None]
    return requests, sum(known) if len(known) == len(costs) else None


def budget_limit(p: LoadedPipeline, max_usd: float | None) -> float | None:
    """The budget of a run: --max-usd, else the spec's budget.max_usd."""
    return max_usd if max_usd is not None else (p.spec.budget.max_usd if p.spec.budget else None)


def _budget(p: LoadedPipeline, est: Estimate | None, max_usd: float | None) -> dict:
    why = budget_breach(p, est, max_usd)
    return {"over_budget": why is not None, "budget_message": why}


def budget_breach(p: LoadedPipeline, est: Estimate | None, max_usd: float | None) -> str | None:
    """Why an apply must not send these requests: over the budget, or a cost it cannot know."""
    limit = budget_limit(p, max_usd)
    if limit is None or est is None:
        return None
    if est.usd is None:
        return (
            f"cannot check budget.max_usd: no price for {p.spec.model} in the price table "
            "(add it with BATCHFLOW_PRICES)"
        )
    if est.usd > limit:
        return (
            f"estimated cost {usd(est.usd, apart_from=limit)} for {est.requests:,} requests is over the "
            f"budget of {usd(limit, apart_from=est.usd)}"
        )
    return None


def waiting_plan(p: LoadedPipeline, why: str) -> PipelinePlan:
    """The plan of a stage whose upstream must act first: its requests depend on answers not in."""
    return PipelinePlan(
        pipeline=p.name,
        spec=str(p.path),
        actions=[PlannedAction(kind="hold", symbol="=", shard=None, reason=why)],
    )


def pipeline_plan(
    p: LoadedPipeline,
    actions: list[Action],
    scan: Scan,
    state: PipelineState,
    prices: PriceTable,
    max_usd: float | None = None,
) -> PipelinePlan:
    est = estimate(p, scan, state, prices)
    superseded, superseded_usd = superseded_cost(p, scan, state, prices)
    return PipelinePlan(
        pipeline=p.name,
        spec=str(p.path),
        actions=[
            PlannedAction(kind=a.kind, symbol=a.symbol, shard=a.shard, reason=a.reason) for a in actions
        ],
        estimate=est,
        resent_answered=scan.resent_answered,
        superseded_requests=superseded,
        superseded_usd=superseded_usd if superseded else None,
        budget_usd=budget_limit(p, max_usd),
        **_budget(p, est, max_usd),
        failed=policy_breach(p, state.output),
        fingerprint=fingerprint(p, scan, state),
    )


def count_sample(
    pp: PipelinePlan,
    p: LoadedPipeline,
    scan: Scan,
    backend: Backend,
    prices: PriceTable,
    max_usd: float | None,
) -> None:
    """Replace the local input estimate with one from the API's countTokens on sampled requests.

    The SDK counts `contents` only (Developer API), so a system instruction is counted locally,
    and so are file parts (their placeholders mean nothing to the service yet), by the
    service's rules. The cached tokens stay the local count of the cache's text and files."""
    est = pp.estimate
    assert est is not None  # the caller counts only what it estimated
    counted = 0
    for line in scan.sample:
        request = json.loads(line)["request"]
        contents = request.get("contents") or [request["content"]]
        files = [part for c in contents for part in c.get("parts", []) if "fileData" in part]
        texts = [
            {**c, "parts": [part for part in c.get("parts", []) if "fileData" not in part]} for c in contents
        ]
        texts = [c for c in texts if c["parts"]]
        counted += backend.count_tokens(p.spec.model, texts) if texts else 0
        counted += file_part_tokens(json.dumps(files), scan.files)
        if system := request.get("systemInstruction"):
            counted += estimate_text(system)
    est.input_tokens = round(counted / len(scan.sample) * est.requests)
    est.input_basis = f"countTokens on {len(scan.sample)} requests"
    est.usd = prices.cost(
        p.spec.model, Tokens(est.input_tokens, est.output_tokens, est.cached_tokens), est.tier
    )
    for name, value in _budget(p, est, max_usd).items():
        setattr(pp, name, value)


# ---------------------------------------------------------------- rendering


UNPRICED = "unpriced: the model has no price in the catalog (add one with BATCHFLOW_PRICES)"


def describe(est: Estimate) -> str:
    output = {
        "observed": "output as observed so far",
        "max_output_tokens": "output at max_output_tokens",
        "assumed": f"output assumed {ASSUMED_OUTPUT_TOKENS} a request",
        "none": "no output tokens",
    }[est.output_basis]
    cached = f", ~{est.cached_tokens:,} cached" if est.cached_tokens else ""
    return (
        f"{est.requests:,} {plural(est.requests, 'request')}, "
        f"~{est.input_tokens:,} input tokens ({est.input_basis}){cached}, "
        f"~{est.output_tokens:,} output tokens ({output}): "
        + (f"~{usd(est.usd)} at {TIER_NAMES[est.tier]} prices" if est.usd is not None else UNPRICED)
    )


def text_lines(pp: PipelinePlan) -> list[str]:
    """The plan of one pipeline as `plan` prints it."""
    if pp.error:
        return []
    if not pp.actions:
        lines = [f"{pp.pipeline}: up to date"]
        if pp.failed:
            lines.append(
                f"  ! {pp.failed}; apply exits 3 until they succeed; `apply --retry-errors` sends them again"
            )
        return lines
    lines = [f"{pp.pipeline}:"]
    for a in pp.actions:
        what = f"{a.kind} shard {a.shard[:8]}" if a.shard else a.kind
        lines.append(f"  {a.symbol} {what}: {a.reason}")
    if pp.resent_answered:
        lines.append(
            f"  ~ {pp.resent_answered:,} answered requests changed: they will be sent and paid again"
        )
    if pp.superseded_requests:
        lines.append(
            f"  - {pp.superseded_requests:,} {plural(pp.superseded_requests, 'request')} in flight "
            f"no longer match the spec: apply cancels them before they spend ~{usd(pp.superseded_usd)} "
            "more (what they finished is kept; on Vertex AI a cancelled job bills the rows it finished)"
        )
    if pp.estimate:
        lines.append(f"  = estimate: {describe(pp.estimate)}")
    if pp.over_budget:
        lines.append(f"  ! {pp.budget_message}: apply refuses")
    return lines


def summary_line(plan: Plan) -> str:
    counts: dict[str, int] = {}
    for pp in plan.pipelines:
        for a in pp.actions:
            counts[a.kind] = counts.get(a.kind, 0) + 1
    broken = len(plan.unloaded) + sum(1 for pp in plan.pipelines if pp.error)
    if broken:  # never "no changes" above an error: what it hides is unknown
        unplanned = f"Could not plan {broken} {plural(broken, 'pipeline')} (see the errors)."
        if not counts:
            return unplanned
    if not counts:
        return "No changes. Every pipeline is up to date."
    words = [f"{n} output(s) to write" if k == "output" else f"{n} to {k}" for k, n in counts.items()]
    estimates = [pp.estimate for pp in plan.pipelines if pp.estimate]
    total = ""
    if estimates:
        known = sum(e.usd for e in estimates if e.usd is not None)
        unpriced = sum(e.requests for e in estimates if e.usd is None)
        total = f" Estimated cost: ~{usd(known)}"
        if unpriced:  # never $0.00 for what has no price
            total += f", and {unpriced:,} {plural(unpriced, 'request')} of models with no price"
        total += "."
    return "Plan: " + ", ".join(words) + "." + total + (f" {unplanned}" if broken else "")


def markdown(plan: Plan) -> str:
    """The plan as a pull-request comment or a GitHub step summary."""
    rows = [
        "| pipeline | changes | requests | est. input tokens | est. cost | notes |",
        "|---|---|---|---|---|---|",
    ]
    for pp in plan.pipelines:
        est = pp.estimate
        notes = []
        if pp.error:
            notes.append(f"**error:** {pp.error}")
        if pp.resent_answered:
            notes.append(f"{pp.resent_answered:,} answered requests changed: paid again")
        if pp.over_budget:
            notes.append(f"**over budget:** {pp.budget_message}")
        if pp.failed:
            notes.append(f"**failed requests:** {pp.failed}")
        changes = "—" if pp.error else str(sum(a.kind != "hold" for a in pp.actions))
        numbers = f"{est.requests:,} | {est.input_tokens:,} | {usd(est.usd)}" if est else "0 | 0 | —"
        rows.append(f"| `{pp.pipeline}` | {changes} | {numbers} | {'; '.join(notes)} |")
    rows += [f"| — | — | — | — | — | **error:** {problem} |" for problem in plan.unloaded]
    details = []
    for pp in plan.pipelines:
        if pp.actions:
            body = "\n".join(text_lines(pp)[1:])
            details.append(f"<details><summary>{pp.pipeline}</summary>\n\n```\n{body}\n```\n</details>")
    return "\n".join(["### batchflow plan", "", summary_line(plan), "", *rows, "", *details]) + "\n"


# ---------------------------------------------------------------- saved plans


def save(plan: Plan, path: Path) -> None:
    from ..state.atomic import write_atomic

    doc = plan.model_dump(mode="json")
    base = path.resolve().parent
    for pp in doc["pipelines"]:  # relative to the plan file: the checkout may move between CI steps
        pp["spec"] = os.path.relpath(Path(pp["spec"]).resolve(), base)
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())


def load(path: Path) -> Plan:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
            raise ValueError("not a plan written by `batchflow plan --out`")
        plan = Plan.model_validate(doc)
    except (OSError, ValueError) as exc:
        raise BatchflowError(f"{path}: cannot read the plan: {str(exc).splitlines()[0]}") from None
    for pp in plan.pipelines:
        pp.spec = str((path.resolve().parent / pp.spec).resolve())
    return plan


def changed(saved: PipelinePlan, now: PipelinePlan) -> str | None:
    """What changed since a saved plan was made, in words; None if nothing did."""
    if saved.fingerprint is None and now.fingerprint is None and not (saved.error or now.error):
        # A stage waiting for its upstream, then and now: the upstream's own plan is checked.
        return None if saved.actions == now.actions else "what it waits for changed"
    if saved.error or saved.fingerprint is None or now.fingerprint is None:
        return "it could not be planned then" if saved.error else "it could not be planned now"
    parts = [
        name
        for name in ("spec", "source", "state")
        if getattr(saved.fingerprint, name) != getattr(now.fingerprint, name)
    ]
    if not parts:
        return None
    words = {"spec": "its spec", "source": "its source", "state": "its state"}
    return " and ".join(words[x] for x in parts) + " changed since the plan was made"
