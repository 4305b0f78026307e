"""Progress of long work: rendering a large source, and jobs at work under `apply --wait`.

On a terminal, a live bar (records per second, and the time left when the number of records
is known from the last run). In CI (no terminal, or CI=true): plain lines, a few seconds into
rendering and then at most once a minute per job or source, with no control codes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import TaskID

JobStats = tuple[int, int]  # requests done, requests in all
CallStats = tuple[int, int, int, int]  # calls answered, in all, in flight, tried again


class Reporter:
    """Receives progress; the base class ignores it."""

    jobs = False  # whether jobs' request counts are wanted (they cost an API call)

    @property
    def active(self) -> bool:
        """Whether a live display is on the terminal now."""
        return False

    def render(self, pipeline: str, count: int, total: int | None, finished: bool = False) -> None:
        pass

    def job(self, pipeline: str, name: str, stats: Callable[[], JobStats | None]) -> None:
        pass

    def calls(self, pipeline: str, calls: CallStats, finished: bool = False) -> None:
        """Flex calls of a shard: answered of all, in flight, tried again (shed or limited)."""

    def close(self) -> None:
        pass


def reporter_for(console: Console, *, jobs: bool) -> Reporter:
    """jobs: report the request counts of jobs at work (`apply --wait`)."""
    if console.is_terminal and os.environ.get("CI", "").lower() not in ("true", "1"):
        reporter: Reporter = LiveReporter(console)
    else:
        reporter = PlainReporter(console.print)
    reporter.jobs = jobs
    return reporter


class PlainReporter(Reporter):
    """One line now and then: what CI logs can hold."""

    def __init__(
        self,
        say: Callable[[str], None],
        every: float = 60.0,
        render_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.say, self.every, self.render_after, self.clock = say, every, render_after, clock
        self._started: dict[str, float] = {}  # source renders under way
        self._last: dict[str, tuple[float, JobStats | None]] = {}  # key -> when said, what said

    def _due(self, key: str) -> bool:
        said = self._last.get(key)
        return said is None or self.clock() - said[0] >= self.every

    def render(self, pipeline: str, count: int, total: int | None, finished: bool = False) -> None:
        now = self.clock()
        started = self._started.setdefault(pipeline, now)
        if finished:
            self._started.pop(pipeline, None)
            self._last.pop(f"render:{pipeline}", None)
            return
        key = f"render:{pipeline}"
        if now - started < self.render_after or not self._due(key):
            return
        rate = count / max(now - started, 1e-9)
        of = f" of {total:,}" if total else ""
        left = f", about {(total - count) / rate:.0f} s left" if total and rate and total > count else ""
        self.say(f"{pipeline}: rendering: {count:,}{of} records ({rate:,.0f}/s{left})")
        self._last[key] = (now, None)

    def job(self, pipeline: str, name: str, stats: Callable[[], JobStats | None]) -> None:
        key = f"job:{name}"
        if not self.jobs or not self._due(key):
            return
        counts = stats()
        previous = self._last.get(key)
        if counts is None or (previous is not None and previous[1] == counts):
            return  # nothing new to say
        done, total = counts
        self.say(f"{pipeline}: {name}: {done:,} of {total:,} requests done")
        self._last[key] = (self.clock(), counts)

    def calls(self, pipeline: str, calls: CallStats, finished: bool = False) -> None:
        key = f"calls:{pipeline}"
        if finished:
            self._last.pop(key, None)
            return
        if key not in self._last:
            self._last[key] = (self.clock(), None)  # the first line a minute in, as for renders
            return
        if not self._due(key):
            return
        answered, total, in_flight, retried = calls
        counts = f"{answered:,} of {total:,} answered, {in_flight} in flight, {retried:,} retried"
        self.say(f"{pipeline}: flex: {counts}")
        self._last[key] = (self.clock(), None)


class LiveReporter(Reporter):
    """A live bar per source being rendered and per job at work, cleared when done."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, TaskID] = {}
        self.started: dict[str, float] = {}

    def _task(self, key: str, description: str, total: int | None) -> TaskID:
        if not self.tasks:
            self.bars.start()
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(description, total=total, rate="")
        return self.tasks[key]

    def _drop(self, key: str) -> None:
        self.started.pop(key, None)
        if key in self.tasks:
            self.bars.remove_task(self.tasks.pop(key))
            if not self.tasks:
                self.bars.stop()

    def render(self, pipeline: str, count: int, total: int | None, finished: bool = False) -> None:
        key = f"render:{pipeline}"
        if finished:
            self._drop(key)
            return
        task = self._task(key, f"{pipeline}: rendering records", total)
        elapsed = time.monotonic() - self.started.setdefault(key, time.monotonic())
        rate = f"{count / elapsed:,.0f} records/s" if elapsed > 0 else ""
        self.bars.update(task, completed=count, rate=rate)

    @property
    def active(self) -> bool:
        return bool(self.tasks)

    def job(self, pipeline: str, name: str, stats: Callable[[], JobStats | None]) -> None:
        if not self.jobs:
            return
        counts = stats()
        if counts is None:
            return
        done, total = counts
        key = f"job:{name}"
        task = self._task(key, f"{pipeline}: {name}", total)
        self.bars.update(task, completed=done, total=total)
        if done >= total:
            self._drop(key)

    def calls(self, pipeline: str, calls: CallStats, finished: bool = False) -> None:
        key = f"calls:{pipeline}"
        if finished:
            self._drop(key)
            return
        answered, total, in_flight, retried = calls
        task = self._task(key, f"{pipeline}: flex calls", total)
        self.bars.update(task, completed=answered, rate=f"{in_flight} in flight, {retried} retried")

    def close(self) -> None:
        for key in list(self.tasks):
            self._drop(key)
