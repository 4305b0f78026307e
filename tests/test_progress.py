"""Progress: plain lines in CI (rare, no control codes), live bars on a terminal."""

from __future__ import annotations

import io
import json

from conftest import write
from rich.console import Console

from batchflow.run.progress import LiveReporter, PlainReporter, reporter_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_come_late_and_rarely():
    lines: list[str] = []
    clock = Clock()
    reporter = PlainReporter(lines.append, clock=clock)
    reporter.jobs = True
    reporter.render("p", 500, 10_000)
    clock.now = 5
    reporter.render("p", 1_000, 10_000)
    assert lines == []  # a short render says nothing
    clock.now = 10
    reporter.render("p", 2_000, 10_000)
    clock.now = 30
    reporter.render("p", 6_000, 10_000)
    assert lines == ["p: rendering: 2,000 of 10,000 records (200/s, about 40 s left)"]
    reporter.render("p", 10_000, 10_000, finished=True)

    reporter.job("p", "batches/a", lambda: (0, 8))
    clock.now = 50
    reporter.job("p", "batches/a", lambda: (4, 8))  # within the minute: quiet
    clock.now = 100
    reporter.job("p", "batches/a", lambda: (0, 8))  # a minute on, but nothing new
    reporter.job("p", "batches/a", lambda: (8, 8))
    assert lines[1:] == ["p: batches/a: 0 of 8 requests done", "p: batches/a: 8 of 8 requests done"]


def test_job_counts_are_asked_only_when_wanted():
    asked = []
    reporter = reporter_for(Console(file=io.StringIO()), jobs=False)
    reporter.job("p", "batches/a", lambda: asked.append(1))
    assert asked == []


def test_live_bars_on_a_terminal():
    screen = io.StringIO()
    reporter = LiveReporter(Console(file=screen, force_terminal=True, width=100))
    reporter.jobs = True
    reporter.render("p", 500, 1_000)
    assert reporter.active
    reporter.render("p", 1_000, 1_000, finished=True)
    reporter.job("p", "batches/a", lambda: (2, 4))
    reporter.job("p", "batches/a", lambda: (4, 4))  # done: its bar goes
    assert not reporter.active
    reporter.close()
    assert "rendering records" in screen.getvalue()


def test_apply_wait_in_ci_says_how_far_jobs_are(cli, emulator, emulator_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    write(
        tmp_path / "pipelines/p.yaml",
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data.jsonl, key: "{{ id }}"}
        request: {prompt: "Say {{ id }}"}
        output: {uri: out.jsonl}
        """,
    )
    write(tmp_path / "pipelines/data.jsonl", "".join(json.dumps({"id": i}) + "\n" for i in range(3)))
    emulator.store.clock.set_speed(60)  # the job takes a second or two: it is seen at work
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert "requests done" in result.out and "\x1b" not in result.out
    assert "requests done" not in cli("apply").out  # without --wait: no extra calls, no extra lines


def test_flex_calls_are_told_in_ci_a_minute_in_and_then_each_minute():
    lines: list[str] = []
    clock = Clock()
    reporter = PlainReporter(lines.append, clock=clock)
    reporter.calls("p", (1, 100, 8, 0))
    clock.now = 30
    reporter.calls("p", (40, 100, 8, 2))
    assert lines == []  # calls that take under a minute say nothing
    clock.now = 61
    reporter.calls("p", (70, 100, 8, 5))
    clock.now = 90
    reporter.calls("p", (80, 100, 8, 5))
    assert lines == ["p: flex: 70 of 100 answered, 8 in flight, 5 retried"]
    reporter.calls("p", (100, 100, 0, 5), finished=True)
