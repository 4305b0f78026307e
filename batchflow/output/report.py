"""`batchflow report`: per variant of each matrix or scored spec, what it answered, how well,
and at what cost; as markdown, JSON, or one self-contained HTML page with a chart.

The figures come from the states, through the rows of the long-form output (run/evals.py), so a
report says what the output holds. The mean score's 95% interval is Wilson's score interval:
exact enough for a few dozen records, never outside 0..1, and for scores between 0 and 1 (a
judge's) no narrower than the spread of the scores allows.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from ..output.join import unanswered
from ..spec.pricing import PriceTable, shards_cost, usd

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


class VariantReport(BaseModel):
    name: str  # NAME[axis=value,...]
    axes: dict[str, Any]  # the matrix's value of each axis
    model: str
    records: int  # rows in the output
    answered: int  # rows with an answer
    errors: int  # rows whose request failed for good (or whose answer is an error)
    pending: int  # rows whose request has no answer yet
    scored: int  # answered rows with a score (a judge may not have graded them all yet)
    correct: int  # scores at or above the pass mark (1 for a metric's hit)
    mean_score: float | None
    ci_low: float | None  # the 95% interval of the mean score
    ci_high: float | None
    tokens: dict[str, int]  # input, output (thinking included), cached, over every request sent
    cost_usd: float | None  # what the variant's requests cost (None: a model with no price)
    judge_cost_usd: float | None  # what grading its answers cost; None without a judge
    cost_per_correct_usd: float | None  # cost_usd / correct
    front: bool  # on the Pareto front: no other variant scores higher for less, or as high for less


class GroupReport(BaseModel):
    name: str
    spec: str  # the spec file
    scoring: str  # the metric, or "judge (MODEL)"
    axes: list[str]
    variants: list[VariantReport]


class Report(BaseModel):
    format: str = "batchflow-report"
    version: int = 1
    created_at: str
    prices: str  # which price table: its date and source
    groups: list[GroupReport]


def wilson(mean: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a mean of `n` scores between 0 and 1."""
    if n == 0:
        return 0.0, 1.0
    denominator = 1 + z * z / n
    center = (mean + z * z / (2 * n)) / denominator
    half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def pareto(variants: list[VariantReport]) -> None:
    """Mark the variants that no other beats on both score and cost."""
    known = [v for v in variants if v.mean_score is not None and v.cost_usd is not None]
    for v in variants:
        v.front = v in known and not any(
            u is not v
            and u.cost_usd <= v.cost_usd  # type: ignore[operator]
            and u.mean_score >= v.mean_score  # type: ignore[operator]
            and (u.cost_usd < v.cost_usd or u.mean_score > v.mean_score)  # type: ignore[operator]
            for u in known
        )


def variant_report(
    name: str,
    axes: dict[str, Any],
    model: str,
    rows: Iterable[dict[str, Any]],
    shards: list,
    judge: tuple[str, list] | None,  # the judge's model and shards
    prices: PriceTable,
    pass_score: float,
) -> VariantReport:
    records = pending = errors = scored = correct = 0
    total = 0.0
    for r in rows:  # one pass, nothing held: a report costs what the output's rows weigh, not more
        records += 1
        if r.get("error") is not None:
            waiting = unanswered(r)
            pending += waiting
            errors += not waiting
        elif r.get("score") is not None:
            scored += 1
            total += float(r["score"])
            correct += float(r["score"]) >= pass_score
    mean = total / scored if scored else None
    low, high = wilson(mean, scored) if mean is not None else (None, None)
    cost = shards_cost(prices, model, shards)
    tokens = {k: sum(s.usage.get(k, 0) for s in shards) for k in ("prompt", "output", "cached")}
    return VariantReport(
        name=name,
        axes=axes,
        model=model,
        records=records,
        answered=records - pending - errors,
        errors=errors,
        pending=pending,
        scored=scored,
        correct=correct,
        mean_score=mean,
        ci_low=low,
        ci_high=high,
        tokens={"input": tokens["prompt"], "output": tokens["output"], "cached": tokens["cached"]},
        cost_usd=cost,
        judge_cost_usd=None if judge is None else shards_cost(prices, *judge),
        cost_per_correct_usd=cost / correct if cost is not None and correct else None,
        front=False,
    )


# ---------------------------------------------------------------- formats


def _score(v: VariantReport) -> str:
    if v.mean_score is None:
        return "–"
    return f"{v.mean_score:.2f} ({v.ci_low:.2f}–{v.ci_high:.2f})"


def _tokens(v: VariantReport) -> str:
    return f"{v.tokens['input']:,} in, {v.tokens['output']:,} out"


def _headers(g: GroupReport) -> list[str]:
    judged = any(v.judge_cost_usd is not None for v in g.variants)
    return [
        "variant",
        "answered",
        "errors",
        "mean score (95% CI)",
        "tokens",
        "cost",
        "cost / correct",
        *(["judge cost"] if judged else []),
        "front",
    ]


def _cells(g: GroupReport, v: VariantReport) -> list[str]:
    judged = any(x.judge_cost_usd is not None for x in g.variants)
    answered = f"{v.answered} of {v.records}" + (f" ({v.pending} to come)" if v.pending else "")
    return [
        ", ".join(f"{k}={val}" for k, val in v.axes.items()) or v.name,
        answered,
        str(v.errors),
        _score(v),
        _tokens(v),
        usd(v.cost_usd),
        usd(v.cost_per_correct_usd) if v.cost_per_correct_usd is not None else "–",
        *([usd(v.judge_cost_usd)] if judged else []),
        "★" if v.front else "",
    ]


def markdown(report: Report) -> str:
    out = []
    for g in report.groups:
        out += [
            f"### {g.name}",
            "",
            f"Scored by {g.scoring}. ★: no other variant scores higher for less.",
            "",
        ]
        headers = _headers(g)
        out.append("| " + " | ".join(headers) + " |")
        out.append("|" + "|".join("---" for _ in headers) + "|")
        for v in g.variants:
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(g, v)) + " |")
        out.append("")
    if not report.groups:
        out.append("No matrix or scored pipeline among these specs (see `matrix:` and `score:`).")
    out.append(f"Prices: {report.prices}.")
    return "\n".join(out) + "\n"


def as_json(report: Report) -> str:
    return report.model_dump_json(indent=2) + "\n"


def page(report: Report) -> str:
    """One HTML page, whole: the tables, and per group a chart of mean score against cost with
    the Pareto front drawn through the variants on it. Plotly's JavaScript is embedded, so the
    page opens with no network."""
    import plotly.graph_objects as go
    import plotly.io as pio

    parts: list[str] = []
    first = True
    for g in report.groups:
        headers = _headers(g)
        table = (
            "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead>"
        )
        table += "<tbody>"
        for v in g.variants:
            cls = ' class="front"' if v.front else ""
            table += f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(g, v)) + "</tr>"
        table += "</tbody></table>"
        plotted = [v for v in g.variants if v.mean_score is not None and v.cost_usd is not None]
        chart = ""
        if plotted:
            fig = _figure(go, g, plotted)
            chart = pio.to_html(
                fig,
                full_html=False,
                include_plotlyjs="inline" if first else False,
                div_id=f"chart-{len(parts)}",
                config={"displaylogo": False, "responsive": True},
            )
            first = False
        else:
            chart = "<p>No variant has both a score and a cost yet: nothing to chart.</p>"
        parts.append(
            f"<section><h2>{html.escape(g.name)}</h2><p>Scored by {html.escape(g.scoring)}. "
            "★ marks the variants no other scores higher for less.</p>"
            f"{table}{chart}</section>"
        )
    if not parts:
        parts.append("<p>No matrix or scored pipeline among these specs.</p>")
    return _PAGE.format(
        created=html.escape(report.created_at), prices=html.escape(report.prices), body="\n".join(parts)
    )


def _figure(go, g: GroupReport, plotted: list[VariantReport]):
    def label(v: VariantReport) -> str:
        return ", ".join(f"{val}" for val in v.axes.values()) or v.name

    def trace(vs: list[VariantReport], name: str, symbol: str, size: int, where: str):
        return go.Scatter(
            x=[v.cost_usd for v in vs],
            y=[v.mean_score for v in vs],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [v.ci_high - v.mean_score for v in vs],  # type: ignore[operator]
                "arrayminus": [v.mean_score - v.ci_low for v in vs],  # type: ignore[operator]
                "thickness": 1,
            },
            mode="markers+text",
            text=[label(v) for v in vs],
            textposition=where,
            cliponaxis=False,  # a label at the chart's edge is drawn whole
            marker={"symbol": symbol, "size": size},
            name=name,
            hovertemplate="%{text}<br>score %{y:.3f}<br>cost $%{x:.6f}<extra></extra>",
        )

    front = sorted((v for v in plotted if v.front), key=lambda v: v.cost_usd or 0)
    others = [v for v in plotted if not v.front]
    fig = go.Figure()
    if front:
        fig.add_trace(
            go.Scatter(
                x=[v.cost_usd for v in front],
                y=[v.mean_score for v in front],
                mode="lines",
                line={"dash": "dot", "width": 1},
                name="Pareto front",
                hoverinfo="skip",
            )
        )
        fig.add_trace(trace(front, "on the front", "star", 16, "top center"))
    if others:
        fig.add_trace(trace(others, "beaten on both", "circle", 10, "bottom center"))
    costs = [v.cost_usd for v in plotted if v.cost_usd]
    spread = max(costs) / min(costs) if costs else 1.0
    fig.update_layout(
        title=f"{g.name}: mean score against cost",
        xaxis_title="cost of the variant's requests (USD)" + (", log scale" if spread > 4 else ""),
        yaxis_title="mean score (95% CI)",
        xaxis_type="log" if spread > 4 else "linear",  # models' prices differ by orders of magnitude
        xaxis_dtick="D2" if spread > 4 else None,  # ticks at 1, 2 and 5 of each decade
        xaxis_tickformat="$.3~r",
        margin={"l": 90, "r": 90},
        yaxis_range=[-0.05, 1.1],
        template="plotly_white",
        height=480,
    )
    return fig


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>batchflow report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }}
tr.front td {{ background: #fff8dc; }}
footer {{ color: #666; font-size: .9rem; }}
</style>
</head>
<body>
<h1>batchflow report</h1>
{body}
<footer>Made {created}. Prices: {prices}.</footer>
</body>
</html>
"""


def dumps(report: Report, fmt: str) -> str:
    return {"markdown": markdown, "json": as_json, "html": page}[fmt](report)
