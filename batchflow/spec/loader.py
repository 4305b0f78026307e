"""Loading specs: files and folders, YAML with line numbers, pydantic errors made readable."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import SpecError, SpecErrors
from . import checks
from .matrix import expand, judge_doc, judge_error, judge_spec, variant_name
from .matrix import problems as matrix_problems
from .models import PROJECT_FILES, SPEC_SUFFIXES, LoadedPipeline, Member, Pipeline
from .project import find_project
from .yamlsource import Document, Loc, load_documents


def find_spec_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.suffix in SPEC_SUFFIXES and f.name not in PROJECT_FILES and f.is_file()
                )
            )
        elif p.exists():
            files.append(p)
        else:
            raise SpecError("no such file or folder", file=str(p))
    return files


def load_pipelines(paths: list[Path], backend: str = "gemini") -> list[LoadedPipeline]:
    """Load every pipeline under `paths`; raise SpecErrors listing every problem found.
    `backend` is the one a spec without `backend:` runs on (BATCHFLOW_BACKEND)."""
    loaded, errors = load_each(paths, backend)
    if errors:
        raise SpecErrors(errors)
    return loaded


def load_each(paths: list[Path], backend: str = "gemini") -> tuple[list[LoadedPipeline], list[SpecError]]:
    """Every pipeline that loads, and the problems of those that do not (plan and apply go on
    with the good ones)."""
    errors: list[SpecError] = []
    loaded: list[LoadedPipeline] = []
    for file in find_spec_files(paths):
        try:
            loaded.extend(load_file(file, backend))
        except SpecErrors as exc:
            errors.extend(exc.errors)
        except SpecError as exc:
            errors.append(exc)
    # The variants and judges of one spec share its name: a name is taken once per spec.
    seen: dict[str, LoadedPipeline] = {}
    duplicated: set[str] = set()
    for p in loaded:
        name = p.member.group if p.member else p.name
        first = seen.setdefault(name, p)
        if (first.path, first.line) != (p.path, p.line) and name not in duplicated:
            duplicated.add(name)
            errors.append(
                SpecError(
                    f"pipeline name {name!r} is also used in {first.path}:{first.line}",
                    file=str(p.path),
                    line=p.line,
                    field="name",
                )
            )
    return [p for p in loaded if (p.member.group if p.member else p.name) not in duplicated], errors


def load_file(file: Path, backend: str = "gemini") -> list[LoadedPipeline]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {exc}", file=str(file)) from None
    docs = list(load_documents(text, str(file)))
    if not docs or all(d.data is None for d in docs):
        raise SpecError("file is empty; expected a pipeline spec", file=str(file))
    errors: list[SpecError] = []
    out: list[LoadedPipeline] = []
    found = find_project(file.resolve().parent)
    tier = found[1].tier if found else None  # the project's default, for specs that name none
    for doc in docs:
        mark = doc.mark(("name",))
        line = mark.line if mark else None
        upstream = doc.mark(("source", "pipeline"))
        if wrong := matrix_problems(doc):
            errors.extend(wrong)
            continue
        variants = expand(doc)
        seen: dict[tuple, tuple[SpecError, list[str]]] = {}  # each problem, and the variants with it
        for name, member, view in variants:
            try:
                spec = _validate(view, file, backend, tier)
                if member is not None:
                    spec = spec.model_copy(update={"name": name, "matrix": None})
                out.append(
                    LoadedPipeline(
                        spec=spec,
                        path=file,
                        line=line,
                        source_line=upstream.line if upstream else None,
                        member=member,
                    )
                )
                if member is not None and spec.score is not None and spec.score.judge is not None:
                    out.append(_judge(view, spec, member, file, backend, line))
            except SpecErrors as exc:
                for e in exc.errors:
                    seen.setdefault((e.line, e.column, e.field, e.message), (e, []))[1].append(name)
        for e, names in seen.values():  # said once; a problem of some variants only says which
            if len(names) < len(variants):
                more = f" and {len(names) - 1} more" if len(names) > 1 else ""
                e.message += f" (in {names[0]}{more})"
            errors.append(e)
    if errors:
        raise SpecErrors(sorted(errors, key=lambda e: (e.line or 0, e.column or 0)))
    return out


def _judge(
    view: Document, variant: Pipeline, member: Member, file: Path, backend: str, line: int | None
) -> LoadedPipeline:
    """The judge stage of a variant, checked as a pipeline of its own."""
    name = variant_name(member.group, member.axes, judge=True)
    spec = judge_spec(variant, name, variant.name)
    if errors := checks.check(judge_doc(view), spec, file, spec.backend or backend):
        raise SpecErrors([judge_error(e) for e in errors])
    mark = view.mark(("score", "judge"), prefer_key=True)
    return LoadedPipeline(
        spec=spec,
        path=file,
        line=line,
        source_line=mark.line if mark else line,
        member=dataclasses.replace(member, judge=True),
    )


def _validate(doc: Document, file: Path, backend: str, tier: str | None = None) -> Pipeline:
    if not isinstance(doc.data, dict):
        raise SpecErrors([doc.error((), "a pipeline spec must be a mapping of fields")])
    errors: list[SpecError] = []
    data = doc.data
    gen = (
        (data.get("request") or {}).get("generation_config")
        if isinstance(data.get("request"), dict)
        else None
    )
    if isinstance(gen, dict):
        for key in ("response_schema", "response_json_schema"):
            if isinstance(gen.get(key), dict) and "$ref" in gen[key]:
                try:
                    gen[key] = _read_ref(gen[key]["$ref"], file)
                except SpecError as exc:
                    loc = ("request", "generation_config", key, "$ref")
                    errors.append(doc.error(loc, exc.message))
                    gen[key] = None  # reported once, here; not again as a schema without a type
    if "tier" not in data and tier is not None:
        data = {**data, "tier": tier}
    try:
        spec = Pipeline.model_validate(data)
    except ValidationError as exc:
        errors.extend(_to_spec_errors(exc, doc))
        raise SpecErrors(errors) from None
    errors += checks.check(doc, spec, file, spec.backend or backend)
    if errors:
        raise SpecErrors(errors)
    return spec


def _read_ref(ref: Any, file: Path) -> dict[str, Any]:
    if not isinstance(ref, str):
        raise SpecError("$ref must be a path to a JSON file", file=str(file))
    target = (file.parent / ref).resolve()
    try:
        value = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"$ref file not found: {ref}", file=str(file)) from None
    except (OSError, ValueError) as exc:
        raise SpecError(f"$ref file {ref} is not valid JSON: {exc}", file=str(file)) from None
    if not isinstance(value, dict):
        raise SpecError(f"$ref file {ref} must hold a JSON object", file=str(file))
    return value


_FRIENDLY_PATTERNS = {
    ("name",): "must be lowercase letters, digits and hyphens, e.g. product-tags",
    ("model",): "must be a model name such as gemini-2.5-flash",
}
_UNION_TAGS = {"name", "functions"}  # branch names pydantic puts in the location of `tools` errors


def _to_spec_errors(exc: ValidationError, doc: Document) -> list[SpecError]:
    out = []
    for err in exc.errors():
        loc: Loc = tuple(err["loc"])
        if len(loc) >= 3 and loc[0] == "tools" and loc[2] in _UNION_TAGS:
            loc = loc[:2] + loc[3:]
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
            allowed = _fields_at(Pipeline, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            elif allowed:
                message += f" (allowed: {', '.join(allowed)})"
            out.append(doc.error(loc, message, prefer_key=True))
        elif kind == "missing":
            out.append(doc.error(loc, "required field is missing", prefer_key=True))
        elif kind == "literal_error":
            expected = [
                e.strip().strip("'") for e in err["ctx"]["expected"].replace(" or ", ", ").split(", ")
            ]
            close = difflib.get_close_matches(str(err["input"]), expected, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(expected)}"
            out.append(doc.error(loc, f"{err['input']!r} is not allowed; {hint}"))
        elif kind == "string_pattern_mismatch" and loc in _FRIENDLY_PATTERNS:
            out.append(doc.error(loc, f"{err['input']!r} {_FRIENDLY_PATTERNS[loc]}"))
        elif kind == "value_error":
            out.append(doc.error(loc, str(err["ctx"]["error"])))
        else:
            out.append(doc.error(loc, err["msg"]))
    return out


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model found by walking `loc` from `model` (for suggestions)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        current = _unwrap_model(current.model_fields[part].annotation) if _is_model(current) else None
        if current is None:
            return []
    return list(current.model_fields) if _is_model(current) else []


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _unwrap_model(tp: Any) -> Any:
    if _is_model(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(tp):
            found = _unwrap_model(arg)
            if found is not None:
                return found
    return None
