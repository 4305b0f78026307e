"""Scoring answers: the metrics that compare an answer with its reference, and what a judge's
verdict says. Scores run from 0 to 1; a row with no answer (an error) has none."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from jinja2 import UndefinedError

from ..errors import SourceError
from ..prepare.render import compile_template
from ..prepare.sources import Record
from ..spec.models import LoadedPipeline, Score

_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def exact(answer: str, expected: str, score: Score) -> bool:
    return _norm(answer, score) == _norm(expected, score)


def contains(answer: str, expected: str, score: Score) -> bool:
    return _norm(expected, score) in _norm(answer, score)


def regex(answer: str, expected: str, score: Score) -> bool:
    flags = 0 if score.case_sensitive else re.IGNORECASE
    return re.search(expected, answer, flags) is not None


def number(answer: str, expected: str, score: Score) -> bool:
    got, want = first_number(answer), first_number(expected)
    if got is None or want is None:
        return False
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=score.tolerance)


def json_equal(answer: str, expected: str, score: Score) -> bool:
    try:
        return bool(json.loads(answer) == json.loads(expected))
    except ValueError:
        return False


METRICS = {"exact": exact, "contains": contains, "regex": regex, "number": number, "json_equal": json_equal}


def first_number(text: str) -> float | None:
    """The first number written in `text` ("about 1,200.5 km" gives 1200.5)."""
    found = _NUMBER.search(text)
    if found is None:
        return None
    try:
        return float(found.group().replace(",", ""))
    except ValueError:
        return None


def _norm(text: str, score: Score) -> str:
    text = text.strip() if score.trim else text
    return text if score.case_sensitive else text.casefold()


def verdict(row: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """A judge's row as (score, reason): the score held to 0..1; none while it has no answer."""
    if row is None or row.get("error") is not None or not isinstance(row.get("json"), dict):
        return None, None
    value, reason = row["json"].get("score"), row["json"].get("reason")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None, reason
    return min(1.0, max(0.0, float(value))), reason


class Scorer:
    """The score settings of one variant, with its templates compiled once."""

    def __init__(self, variant: LoadedPipeline) -> None:
        assert variant.spec.score is not None
        self.variant = variant
        self.score = variant.spec.score
        # The renderer's own fast path: plain fields by lookups, anything else by Jinja.
        self._expected = compile_template(self.score.expected) if self.score.expected else None
        self._answer = compile_template(self.score.answer)

    def expected(self, record: Record) -> str | None:
        if self._expected is None:
            return None
        try:
            return self._expected.render(record.data).strip()
        except Exception as exc:  # noqa: BLE001 - any template error names the record
            raise SourceError(f"score.expected: {exc}", uri=record.uri, line=record.line) from None

    def answer(self, row: dict[str, Any]) -> str:
        """The answer to score, from the row; empty when the template names what the row lacks
        (an answer off its schema has no `json`): that scores 0, as a wrong answer."""
        try:
            return self._answer.render(row)
        except UndefinedError:
            return ""
        except Exception as exc:  # noqa: BLE001 - any template error names the row
            raise SourceError(f"score.answer: {exc}", uri=f"pipeline:{self.variant.name}") from None

    def judged(self, record: Record, row: dict[str, Any]) -> dict[str, Any]:
        """What a judge's rubric sees: the record's fields, the row's key, the answer and the
        reference."""
        return {
            **record.data,
            "key": row["key"],
            "answer": self.answer(row),
            "expected": self.expected(record),
        }

    def metric(self, record: Record, row: dict[str, Any]) -> float | None:
        """The metric's score of a row; None for a row with no answer, or with a judge."""
        if self.score.metric is None or row.get("error") is not None:
            return None
        expected = self.expected(record)
        assert expected is not None  # the spec refuses a metric without `expected`
        try:
            hit = METRICS[self.score.metric](self.answer(row), expected, self.score)
        except re.error as exc:
            raise SourceError(
                f"score.expected: {expected!r} is not a regular expression: {exc}",
                uri=record.uri,
                line=record.line,
            ) from None
        return 1.0 if hit else 0.0
