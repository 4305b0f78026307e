"""Matrix and scored specs: one spec made into the pipelines that run it.

A spec with `matrix:` becomes one variant per combination of its values, each a pipeline of its
own (its own state, shards and cost) named `NAME[axis=value,...]`; a spec with `score.judge`
gets, for each variant, a judge stage named `NAME:judge[...]` that reads the variant's rows.
Variants and judges are `Member`s of the spec's group, whose long-form output and report
gather them (run/evals.py). The variants' errors point at the matrix value that made them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
from typing import Any

from ..errors import SpecError
from .models import VERDICT_SCHEMA, Member, Pipeline, is_axis, matrix_problems
from .yamlsource import Document, Loc


def axis_loc(key: str) -> Loc:
    """Where in the spec a matrix key points: `generation_config.x` is under `request`."""
    parts = tuple(key.split("."))
    return ("request", *parts) if parts[0] == "generation_config" else parts


def axis_columns(keys: list[str]) -> list[str]:
    """The column (and name part) of each axis: the last part of its path, or the whole path
    where two axes end alike."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return [short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)]


def combinations(matrix: dict[str, list[Any]]) -> list[tuple[tuple[str, int, Any], ...]]:
    """Every combination, as (key, index of the value, value) per axis, in the matrix's order."""
    axes = [[(key, i, v) for i, v in enumerate(values)] for key, values in matrix.items()]
    return list(itertools.product(*axes))


def variant_name(group: str, axes: tuple[tuple[str, Any], ...], *, judge: bool = False) -> str:
    head = f"{group}:judge" if judge else group
    if not axes:
        return head
    return f"{head}[{','.join(f'{column}={_shown(value)}' for column, value in axes)}]"


_PLAIN = re.compile(r"[A-Za-z0-9._:/+-]{1,48}")


def _shown(value: Any) -> str:
    """A value as a name shows it: short plain values as they are, others by a digest."""
    text = json.dumps(value) if isinstance(value, bool) or value is None else str(value)
    if isinstance(value, str | int | float | bool) and _PLAIN.fullmatch(text):
        return text
    return "#" + hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def storage_name(name: str) -> str:
    """The name a pipeline's state, files and jobs go under: its own name, or for a variant,
    judge or group output (whose names hold brackets, `=`, `:`...) a plain prefix and a digest,
    which every store, bucket and glob takes as it is."""
    if re.fullmatch(r"[a-z0-9-]+", name):
        return name
    base = re.sub(r"[^a-z0-9-]+", "-", name.split("[", 1)[0]).strip("-")
    return f"{base}.{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def output_state(group: str) -> str:
    """The state document that records what the group's long-form output was written from."""
    return f"{group}:output"


def expand(doc: Document) -> list[tuple[str, Member | None, Document]]:
    """The documents a spec document stands for: itself, or one per matrix combination (its
    data with the values set, its marks pointing at the values), each with its name and Member."""
    data = doc.data
    matrix = data.get("matrix") if isinstance(data, dict) else None
    scored = isinstance(data, dict) and isinstance(data.get("score"), dict)
    if (
        not isinstance(matrix, dict)
        or not matrix
        or not all(isinstance(v, list) and v for v in matrix.values())
    ):
        # No matrix (or one the model will refuse, with the line of the problem).
        if scored and not matrix:
            return [(str(data.get("name")), Member(str(data.get("name"))), doc)]
        return [(str(data.get("name")) if isinstance(data, dict) else "", None, doc)]
    group = str(data.get("name"))
    columns = axis_columns(list(matrix))
    out: list[tuple[str, Member | None, Document]] = []
    combos = combinations(matrix)  # at most MAX_VARIANTS: `problems` refused more
    for combo in combos:
        merged = copy.deepcopy(data)  # the matrix stays, for the model to check it
        keys, values = dict(doc.keys), dict(doc.values)
        for key, i, value in combo:
            if not is_axis(key):
                continue  # the model says which keys a matrix takes
            loc = axis_loc(key)
            _set(merged, loc, value)
            # A field's problem is the key's (said once), a value's is that value's.
            keys[loc] = doc.keys.get(("matrix", key)) or keys.get(loc)  # type: ignore[assignment]
            values[loc] = doc.values.get(("matrix", key, i)) or keys[loc]
        axes = tuple((column, value) for column, (_, _, value) in zip(columns, combo, strict=True))
        view = dataclasses.replace(doc, data=merged, keys=keys, values=values)
        out.append((variant_name(group, axes), Member(group, axes, variants=len(combos)), view))
    return out


def problems(doc: Document) -> list[SpecError]:
    """What is wrong with a spec's matrix, each at its key or value; the model checks the rest."""
    matrix = doc.data.get("matrix") if isinstance(doc.data, dict) else None
    if not isinstance(matrix, dict):
        return []  # absent, or not a mapping: the model says so
    return [
        doc.error(("matrix", *place), message, prefer_key=at_key)
        for place, message, at_key in matrix_problems(matrix)
    ]


def _set(data: dict[Any, Any], loc: Loc, value: Any) -> None:
    for part in loc[:-1]:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    data[loc[-1]] = value


def judge_spec(variant: Pipeline, name: str, variant_name: str) -> Pipeline:
    """The judge stage of a variant: the judging model, the rubric as its prompt, a verdict as its
    structured answer, the variant's rows as its records."""
    from .models import GenerationConfig, Request, Source, ThinkingConfig

    assert variant.score is not None and variant.score.judge is not None
    judge = variant.score.judge
    config = GenerationConfig(
        response_mime_type="application/json",
        response_schema=VERDICT_SCHEMA,
        thinking_config=ThinkingConfig(thinking_level=judge.thinking_level) if judge.thinking_level else None,
    )
    return variant.model_copy(
        update={
            "name": name,
            "model": judge.model,
            "source": Source(pipeline=variant_name),
            "request": Request(prompt=judge.prompt, system=judge.system, generation_config=config),
            "embed": None,
            "cache": None,
            "tools": [],
            "tier": judge.tier or variant.tier,
            "matrix": None,
        }
    )


# Where a judge's fields are in its spec, and where the user wrote them.
_JUDGE_FIELDS = {
    "model": "score.judge.model",
    "request.prompt": "score.judge.prompt",
    "request.system": "score.judge.system",
    "request.generation_config.thinking_config.thinking_level": "score.judge.thinking_level",
    "request": "score.judge",
    "tier": "score.judge.tier",
}


def judge_error(error: SpecError) -> SpecError:
    """A judge's problem, named by the field the user wrote."""
    if error.field in _JUDGE_FIELDS:
        error.field = _JUDGE_FIELDS[error.field]
    return error


def judge_doc(doc: Document) -> Document:
    """The judge's errors point at `score.judge`: its model, prompt and system."""
    keys, values = dict(doc.keys), dict(doc.values)
    for field, written in _JUDGE_FIELDS.items():
        loc, where = tuple(field.split(".")), tuple(written.split("."))
        for marks in (keys, values):
            mark = doc.keys.get(where) if marks is keys else doc.values.get(where)
            if mark is not None:
                marks[loc] = mark
            else:
                marks.pop(loc, None)
    return dataclasses.replace(doc, keys=keys, values=values)
