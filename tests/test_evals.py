"""Evals: a matrix of variants, scored by a metric or a judge, in one long-form output, and the
report that compares them (markdown, JSON, and an HTML page checked in a real browser)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import project

from batchflow.output import scores
from batchflow.output.report import VariantReport, pareto, wilson
from batchflow.spec.matrix import axis_columns, storage_name, variant_name
from batchflow.spec.models import Score

QUESTIONS = [
    {"id": "q1", "question": "What is 2+2?", "answer": "4"},
    {"id": "q2", "question": "Capital of France?", "answer": "Paris"},
    {"id": "q3", "question": "Color of the sky?", "answer": "blue"},
]
# The emulator's answer repeats the prompt: `contains` with the question as the reference
# scores 1, with the answer as the reference 0 (its text has no "Paris").
EVAL = """
    version: 1
    name: qa
    model: gemini-3.8-flash
    source: {uri: data.jsonl, key: "{{ id }}"}
    request: {prompt: "{{ question }}"}
    matrix:
      model: MODELS
      generation_config.thinking_config.thinking_level: [LOW, HIGH]
    score: {expected: "{{ question }}", metric: contains}
    output: {uri: OUT, columns: [question]}
"""


def _eval(tmp_path, models=("gemini-3.8-flash", "gemini-4-argon"), out="qa.csv", spec=EVAL):
    text = spec.replace("MODELS", json.dumps(list(models))).replace("OUT", out)
    project(tmp_path, QUESTIONS, spec=text, spec_file="qa.yaml")


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _sent(emulator, model: str) -> int:
    return sum(j.request_count for j in emulator.store.jobs.values() if j.model.endswith(model))


# ---------------------------------------------------------------- pure parts


def test_variant_names_and_the_names_their_state_goes_under():
    assert variant_name("qa", (("model", "gemini-4-argon"), ("thinking_level", "HIGH"))) == (
        "qa[model=gemini-4-argon,thinking_level=HIGH]"
    )
    assert variant_name("qa", (("model", "m"),), judge=True) == "qa:judge[model=m]"
    assert variant_name("qa", (("system", "You are terse.\nVery."),)).startswith("qa[system=#")
    assert variant_name("qa", ()) == "qa"
    assert storage_name("qa") == "qa"
    safe = storage_name("qa:judge[model=models/gemini-4-argon]")
    assert safe.startswith("qa-judge.") and "/" not in safe and "[" not in safe
    assert axis_columns(["model", "generation_config.temperature", "embed.title", "request.title"]) == [
        "model",
        "temperature",
        "embed.title",
        "request.title",
    ]


@pytest.mark.parametrize(
    ("metric", "answer", "expected", "options", "hit"),
    [
        ("exact", "  Paris \n", "paris", {}, True),
        ("exact", "Paris", "paris", {"case_sensitive": True}, False),
        ("exact", " Paris", "Paris", {"trim": False}, False),
        ("contains", "It is Paris, France.", "paris", {}, True),
        ("contains", "Lyon", "paris", {}, False),
        ("regex", "The answer is 42.", r"\b42\b", {}, True),
        ("regex", "ANSWER", "^answer$", {"case_sensitive": True}, False),
        ("number", "about 1,200.5 km", "1200.5", {}, True),
        ("number", "3.14159", "3.14", {"tolerance": 0.01}, True),
        ("number", "3.2", "3.14", {"tolerance": 0.01}, False),
        ("number", "no number", "3", {}, False),
        ("json_equal", '{"b": [1, 2], "a": 1}', '{"a": 1, "b": [1, 2]}', {}, True),
        ("json_equal", '{"a": 1}', '{"a": 2}', {}, False),
        ("json_equal", "not json", "{}", {}, False),
    ],
)
def test_metrics(metric, answer, expected, options, hit):
    score = Score(expected="x", metric=metric, **options)
    assert scores.METRICS[metric](answer, expected, score) is hit


def test_a_verdict_is_held_to_0_to_1_and_none_without_an_answer():
    assert scores.verdict({"json": {"score": 1.7, "reason": "r"}}) == (1.0, "r")
    assert scores.verdict({"json": {"score": 0.25, "reason": "r"}}) == (0.25, "r")
    assert scores.verdict({"error": {"code": 500}}) == (None, None)
    assert scores.verdict(None) == (None, None)


def test_the_wilson_interval_and_the_pareto_front():
    low, high = wilson(1.0, 10)
    assert 0.69 < low < 0.73 and high == pytest.approx(1.0)  # never outside 0..1, never zero-width
    low, high = wilson(0.5, 100)
    assert low == pytest.approx(0.404, abs=0.001) and high == pytest.approx(0.596, abs=0.001)

    def v(name, score, cost):
        return VariantReport(
            name=name, axes={}, model="m", records=1, answered=1, errors=0, pending=0, scored=1, correct=1,
            mean_score=score, ci_low=0, ci_high=1, tokens={}, cost_usd=cost, judge_cost_usd=None,
            cost_per_correct_usd=None, front=False,
        )  # fmt: skip

    cheap, best, beaten, tie = (
        v("cheap", 0.6, 1.0),
        v("best", 0.9, 3.0),
        v("beaten", 0.5, 2.0),
        v("tie", 0.6, 1.0),
    )
    pareto([cheap, best, beaten, tie])
    assert [x.front for x in (cheap, best, beaten, tie)] == [True, True, False, True]


# ---------------------------------------------------------------- the spec


def test_validate_points_at_the_matrix_value_a_variant_is_refused_for(cli, tmp_path):
    _eval(tmp_path, models=("gemini-3.8-flash", "gemini-2.0-flash"))
    result = cli("validate")
    assert result.code == 1
    lines = (tmp_path / "pipelines/qa.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines, 1) if line.startswith("matrix:")) + 1
    assert f"qa.yaml:{at}:" in result.err and "gemini-2.0-flash" in result.err
    # Said once, not once per variant, naming the variants it is about.
    assert result.err.count("was shut down") == 1
    assert "(in qa[model=gemini-2.0-flash,thinking_level=LOW] and 1 more)" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("  temperature: [0, 1]\n", "matrix key 'temperature': use `model`, or a path under"),
        (
            "  generation_config.temprature: [0, 1]\n",
            "unknown field 'temprature'; did you mean 'temperature'?",
        ),
        ("  model: []\n", "matrix.model: give a list of at least one value"),
        ("  model: [gemini-4-argon, gemini-4-argon]\n", "matrix.model[1]: 'gemini-4-argon' is listed twice"),
    ],
)
def test_bad_matrices(cli, tmp_path, change, message):
    spec = EVAL.replace("      generation_config.thinking_config.thinking_level: [LOW, HIGH]\n", "")
    spec = spec.replace("      model: MODELS\n", "    " + change)
    _eval(tmp_path, spec=spec)
    result = cli("validate")
    assert result.code == 1 and message in result.err, result.err
    assert "qa.yaml:7:" in result.err and "Traceback" not in result.err


def test_bad_scores(cli, tmp_path):
    _eval(
        tmp_path,
        spec=EVAL.replace('score: {expected: "{{ question }}", metric: contains}', "score: {metric: exact}"),
    )
    result = cli("validate")
    assert result.code == 1 and "metric exact compares the answer with `expected`: set it" in result.err
    _eval(tmp_path, spec=EVAL.replace("metric: contains", "metric: close"))
    result = cli("validate")
    assert result.code == 1 and "'close' is not allowed" in result.err
    _eval(tmp_path, spec=EVAL.replace('expected: "{{ question }}"', 'expected: "{{ answr }}"'))
    result = cli("validate")
    assert result.code == 1 and "field 'answr' is not in the source" in result.err


# ---------------------------------------------------------------- end to end on the emulator


def test_a_matrix_runs_each_variant_and_writes_one_long_form(cli, emulator, emulator_env, tmp_path):
    _eval(tmp_path)
    planned = cli("plan")
    assert planned.code == 0
    for name in (
        "qa[model=gemini-3.8-flash,thinking_level=LOW]:",
        "qa[model=gemini-4-argon,thinking_level=HIGH]:",
        "qa:\n  + output: the long form of 4 variants to qa.csv",
    ):
        assert name in planned.out, planned.out
    assert "Plan: 4 to submit, 1 output(s) to write." in planned.out
    done = cli("apply", "--wait")
    assert done.code == 0, done.out + done.err
    assert "qa: + output: 12 rows of 4 variants" in done.out
    rows = _csv(tmp_path / "pipelines/qa.csv")
    assert list(rows[0])[:4] == ["key", "model", "thinking_level", "question"]
    assert list(rows[0])[-2:] == ["expected", "score"]
    assert [(r["model"], r["thinking_level"], r["key"]) for r in rows[:4]] == [
        ("gemini-3.8-flash", "LOW", "q1"),
        ("gemini-3.8-flash", "LOW", "q2"),
        ("gemini-3.8-flash", "LOW", "q3"),
        ("gemini-3.8-flash", "HIGH", "q1"),
    ]
    assert all(r["score"] == "1.0" and r["expected"] == r["question"] for r in rows)
    assert _sent(emulator, "gemini-3.8-flash") == 6 and _sent(emulator, "gemini-4-argon") == 6
    assert cli("plan").out.strip().endswith("No changes. Every pipeline is up to date.")
    status = cli("status")
    assert "qa: 4 variants; 12 requests sent" in status.out

    # A value added: only the new variants' requests are sent, and the output has them too.
    _eval(tmp_path, models=("gemini-3.8-flash", "gemini-4-argon", "gemini-3.5-flash-lite"))
    planned = cli("plan")
    assert planned.out.count("+ submit") == 2, planned.out
    assert cli("apply", "--wait").code == 0
    assert _sent(emulator, "gemini-3.8-flash") == 6 and _sent(emulator, "gemini-4-argon") == 6
    assert _sent(emulator, "gemini-3.5-flash-lite") == 6
    assert len(_csv(tmp_path / "pipelines/qa.csv")) == 18

    # A value removed: the others' answers are kept, nothing is sent; the output drops its rows.
    _eval(tmp_path, models=("gemini-3.8-flash", "gemini-3.5-flash-lite"))
    planned = cli("plan")
    assert "+ submit" not in planned.out and "Plan: 1 output(s) to write." in planned.out
    jobs = len(emulator.store.jobs)
    assert cli("apply").code == 0
    assert len(emulator.store.jobs) == jobs
    rows = _csv(tmp_path / "pipelines/qa.csv")
    assert len(rows) == 12 and {r["model"] for r in rows} == {"gemini-3.8-flash", "gemini-3.5-flash-lite"}

    # Added back: its state kept its answers.
    _eval(tmp_path)
    assert "+ submit" not in cli("plan").out


def test_the_long_form_in_parquet_keeps_types(cli, emulator_env, tmp_path):
    import pyarrow.parquet as pq

    spec = EVAL.replace(
        "generation_config.thinking_config.thinking_level: [LOW, HIGH]",
        "generation_config.temperature: [0, 0.5]",
    )
    _eval(tmp_path, out="qa.parquet", spec=spec)
    assert cli("apply", "--wait").code == 0
    table = pq.read_table(tmp_path / "pipelines/qa.parquet")
    types = {f.name: str(f.type) for f in table.schema}
    assert types["temperature"] in ("double", "int64") and types["score"] == "double"
    assert types["usage"].startswith("struct<prompt_tokens: int64")
    assert table.num_rows == 12 and set(table.column("score").to_pylist()) == {1.0}


JUDGED = """
    version: 1
    name: qa
    source: {uri: data.jsonl, key: "{{ id }}"}
    request: {prompt: "{{ question }}"}
    matrix:
      model: [gemini-3.8-flash, gemini-3.5-flash-lite]
    score:
      expected: "{{ answer }}"
      judge:
        model: gemini-4-argon
        prompt: |
          Question: {{ question }}
          Reference: {{ expected }}
          Answer: {{ answer }}
          Score 1 if the answer agrees with the reference, else 0.
    output: {uri: qa.jsonl, columns: [question]}
"""


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_judge_grades_each_answer_once(cli, emulator, emulator_env, tmp_path):
    project(tmp_path, QUESTIONS, spec=JUDGED, spec_file="qa.yaml")
    planned = cli("plan")
    assert "qa:judge[model=gemini-3.8-flash]:\n  = hold: waits for qa[model=gemini-3.8-flash]" in planned.out
    done = cli("apply", "--wait")
    assert done.code == 0, done.out + done.err
    rows = _rows(tmp_path / "pipelines/qa.jsonl")
    assert len(rows) == 6
    assert all(0 <= r["score"] <= 1 and r["reason"] and r["expected"] in ("4", "Paris", "blue") for r in rows)
    assert _sent(emulator, "gemini-4-argon") == 6  # one verdict per answer
    judged = emulator.store.jobs.values()
    prompts = [j for j in judged if j.model.endswith("gemini-4-argon")]
    assert len(prompts) == 2  # a judge stage per variant, each its own job

    # One question changes: each variant sends it again, and its judge grades only that one.
    changed = [dict(QUESTIONS[0], question="What is 3+3?", answer="6"), *QUESTIONS[1:]]
    project(tmp_path, changed, spec=JUDGED, spec_file="qa.yaml")
    assert cli("apply", "--wait").code == 0
    assert _sent(emulator, "gemini-3.8-flash") == 4 and _sent(emulator, "gemini-4-argon") == 8
    # A variant added: the other variants' judges send nothing.
    project(
        tmp_path,
        changed,
        spec=JUDGED.replace("gemini-3.5-flash-lite]", "gemini-3.5-flash-lite, gemini-4-hydrogen]"),
        spec_file="qa.yaml",
    )
    assert cli("apply", "--wait").code == 0
    assert _sent(emulator, "gemini-4-argon") == 11
    status = cli("status")
    assert "qa: 3 variants and 3 judges" in status.out


def test_the_judge_runs_on_flex_and_the_report_adds_its_cost(cli, emulator, emulator_env, tmp_path):
    spec = JUDGED.replace(
        "        model: gemini-4-argon\n", "        model: gemini-4-argon\n        tier: flex\n"
    )
    project(tmp_path, QUESTIONS, spec=spec, spec_file="qa.yaml")
    assert cli("apply", "--wait").code == 0
    assert emulator.store.flex_calls >= 6 and _sent(emulator, "gemini-4-argon") == 0
    report = json.loads(cli("report", "--format", "json").out)
    # The variants on flex too: the same rows, each saying which tier answered.
    by_batch = {(r["model"], r["key"]): r["score"] for r in _rows(tmp_path / "pipelines/qa.jsonl")}
    project(
        tmp_path,
        QUESTIONS,
        spec=spec.replace("    output:", "    tier: flex\n    output:"),
        spec_file="qa.yaml",
    )
    (tmp_path / "state").rename(tmp_path / "batch-state")
    assert cli("apply", "--wait").code == 0
    assert len(emulator.store.jobs) == 2  # the batch run's two variant jobs, no more
    rows = _rows(tmp_path / "pipelines/qa.jsonl")
    assert {(r["model"], r["key"]): r["score"] for r in rows} == by_batch
    assert {r["tier"] for r in rows} == {"flex"}
    (group,) = report["groups"]
    assert group["scoring"].startswith("a judge (gemini-4-argon")
    assert [v["name"] for v in group["variants"]] == [
        "qa[model=gemini-3.8-flash]",
        "qa[model=gemini-3.5-flash-lite]",
    ]
    for v in group["variants"]:
        assert v["answered"] == v["scored"] == 3 and v["errors"] == v["pending"] == 0
        assert 0 <= v["ci_low"] <= v["mean_score"] <= v["ci_high"] <= 1
        assert v["cost_usd"] > 0 and v["judge_cost_usd"] > 0
    assert any(v["front"] for v in group["variants"])


def test_report_in_markdown_and_json(cli, emulator_env, tmp_path, monkeypatch):
    _eval(tmp_path)
    assert cli("apply", "--wait").code == 0
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = cli("report")
    assert result.code == 0
    assert (
        "| variant | answered | errors | mean score (95% CI) | tokens | cost | cost / correct | front |"
        in result.out
    )
    assert "| model=gemini-4-argon, thinking_level=HIGH | 3 of 3 | 0 | 1.00 (0.44–1.00) |" in result.out
    assert summary.read_text().rstrip() == result.out.rstrip()  # the CI step summary gets the same table
    data = json.loads(cli("report", "--format", "json").out)
    (group,) = data["groups"]
    assert data["format"] == "batchflow-report" and group["axes"] == ["model", "thinking_level"]
    cheapest = min(group["variants"], key=lambda v: v["cost_usd"])
    assert cheapest["front"] and cheapest["cost_per_correct_usd"] == pytest.approx(cheapest["cost_usd"] / 3)
    refused = cli("report", "--format", "html")  # a page needs a file
    assert refused.code == 2 and "--out FILE" in refused.err


def test_report_without_state_says_what_is_to_come(cli, emulator_env, tmp_path):
    _eval(tmp_path)
    result = cli("report", "--format", "json")
    assert result.code == 0
    v = json.loads(result.out)["groups"][0]["variants"][0]
    assert v["pending"] == 3 and v["answered"] == 0 and v["mean_score"] is None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: `make test-browser` installs it")
def test_the_html_report_draws_its_chart_in_a_real_browser(cli, emulator_env, tmp_path):
    _eval(tmp_path)
    assert cli("apply", "--wait").code == 0
    page = tmp_path / "report.html"
    assert cli("report", "--format", "html", "--out", str(page)).code == 0
    text = page.read_text()
    assert "<script src=" not in text and "cdn" not in text.lower().split("<body>")[0]  # no network
    profile = tmp_path / "chromium-profile"
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # The chart drew: an SVG with a point per variant (4), the Pareto line among its traces.
    assert 'class="main-svg"' in dom
    assert dom.count('class="point"') == 4, dom.count('class="point"')
    assert "Pareto front" in dom and "mean score against cost" in dom


def test_budgets_per_variant_and_in_total(cli, emulator, emulator_env, tmp_path):
    spec = EVAL.replace("    output:", "    budget: {total_usd: 0.01}\n    output:")
    _eval(tmp_path, spec=spec)
    planned = cli("plan")
    assert "qa:\n  + output:" in planned.out
    assert "is over budget.total_usd $0.01: apply refuses" in planned.out, planned.out
    refused = cli("apply", "--wait")
    assert refused.code == 1 and "over budget.total_usd" in refused.out + refused.err
    assert not emulator.store.jobs and not emulator.store.files  # nothing uploaded, nothing paid

    # max_usd holds each variant: the dearer model is refused, the other variants go on.
    _eval(tmp_path, spec=EVAL.replace("    output:", "    budget: {max_usd: 0.01}\n    output:"))
    result = cli("apply", "--wait")
    assert result.code == 1
    assert _sent(emulator, "gemini-3.8-flash") == 6 and _sent(emulator, "gemini-4-argon") == 0
    assert "qa[model=gemini-4-argon,thinking_level=LOW]" in result.out + result.err


@pytest.mark.parametrize("kill_after_lines", [2, 7, 15])
def test_kill_9_during_a_matrix_apply_then_apply_again(kill_after_lines, emulator, emulator_env, tmp_path):
    """SIGKILL mid-way through variants and judges; the next apply finishes with one job per
    shard and the same long form as a run never killed."""
    import os

    from conftest import apply_again, kill_apply

    project(tmp_path, QUESTIONS, spec=JUDGED.replace("qa.jsonl", "qa.csv"), spec_file="qa.yaml")
    env = {**os.environ, **emulator_env}
    kill_apply(env, kill_after_lines)
    apply_again(env)
    jobs = list(emulator.store.jobs.values())
    assert len(jobs) == 4 and len({j.display_name for j in jobs}) == 4  # 2 variants, 2 judges
    killed = (tmp_path / "pipelines/qa.csv").read_text()
    shutil.rmtree(tmp_path / "state")
    (tmp_path / "pipelines/qa.csv").unlink()
    apply_again(env)  # a fresh state, on the same (deterministic) emulator
    assert (tmp_path / "pipelines/qa.csv").read_text() == killed


def test_a_saved_plan_a_target_and_destroy_on_a_matrix(cli, emulator, emulator_env, tmp_path):
    _eval(tmp_path)
    # One variant by name: applied alone, and the spec's output waits for all of them.
    one = cli("apply", "--wait", "--target", "qa[model=gemini-4-argon,thinking_level=LOW]")
    assert (
        one.code == 0 and _sent(emulator, "gemini-4-argon") == 3 and _sent(emulator, "gemini-3.8-flash") == 0
    )
    assert not (tmp_path / "pipelines/qa.csv").exists()
    assert cli("plan", "--out", "plan.json").code == 0
    saved = cli("apply", "plan.json")
    assert saved.code == 0, saved.out + saved.err
    assert cli("apply", "--wait", "--target", "qa").code == 0
    assert len(_csv(tmp_path / "pipelines/qa.csv")) == 12
    state = tmp_path / "state"
    assert len(list(state.iterdir())) == 5  # four variants, and what the output was written from
    assert cli("destroy", "--yes").code == 0
    assert not list(state.iterdir())


def test_failed_requests_are_error_rows_without_a_score_and_can_go_to_their_own_file(
    cli, emulator, emulator_env, tmp_path
):
    import httpx2

    faults = {"seed": 3, "line_error_rate": 0.5}
    httpx2.post(f"{emulator.url}/_emulator/faults", json=faults).raise_for_status()
    spec = EVAL.replace(
        "    output: {uri: OUT, columns: [question]}",
        "    retry: {attempts: 1}\n    output: {uri: OUT, columns: [question]}\n"
        "    errors: {uri: qa.errors.jsonl, max_count: 12}",
    )
    _eval(tmp_path, out="qa.jsonl", spec=spec)
    done = cli("apply", "--wait")
    assert done.code == 0, done.out + done.err
    rows = _rows(tmp_path / "pipelines/qa.jsonl")
    failed = _rows(tmp_path / "pipelines/qa.errors.jsonl")
    assert failed and len(rows) + len(failed) == 12
    assert all("error" in r and "score" not in r and r["expected"] == r["question"] for r in failed)
    assert all("error" not in r and r["score"] == 1.0 for r in rows)
    report = json.loads(cli("report", "--format", "json").out)
    variants = report["groups"][0]["variants"]
    assert sum(v["errors"] for v in variants) == len(failed)
    assert all(v["answered"] + v["errors"] == 3 and v["pending"] == 0 for v in variants)
