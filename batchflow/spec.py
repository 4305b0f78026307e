"""Pipeline spec: pydantic models (the single source of truth) and loading from YAML."""

from __future__ import annotations

import difflib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import SpecError, SpecErrors
from .yamlsource import Document, Loc, load_documents

SPEC_SUFFIXES = (".yaml", ".yml")
# The Batch API accepts input files up to 2 GB; one job's file is one shard.
MAX_SHARD_REQUESTS = 1_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


class Source(_Model):
    """Where the records come from."""

    uri: str = Field(description="Local path (relative to the spec file), gs:// or s3:// URL; globs allowed.")
    format: Literal["jsonl", "csv", "text"] | None = Field(
        None, description="Record format; by default taken from the file extension."
    )
    key: str | None = Field(
        None,
        description="Template of each record's unique key, e.g. '{{ sku }}'; default: its position.",
    )


class GenerationConfig(_Model):
    """Passed to the model as the request's generationConfig."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=1)
    max_output_tokens: int | None = Field(None, ge=1)
    candidate_count: int | None = Field(None, ge=1, le=8)
    stop_sequences: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_mime_type: str | None = Field(None, description="e.g. application/json for structured output.")
    response_schema: dict[str, Any] | None = Field(
        None, description="OpenAPI-style schema of the response; {$ref: file} reads a JSON file."
    )
    response_json_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema of the response; {$ref: file} reads a JSON file."
    )

    def to_wire(self) -> dict[str, Any]:
        """REST (camelCase) form; schema bodies are passed through untouched."""
        return {_camel(k): v for k, v in self.model_dump(exclude_none=True).items()}


class Request(_Model):
    """How each record becomes a GenerateContentRequest. Strings are Jinja2 templates."""

    system: str | None = Field(None, description="System instruction (template).")
    prompt: str = Field(description="User prompt (template over the record's fields).")
    generation_config: GenerationConfig | None = None


class Batch(_Model):
    """How requests are grouped into batch jobs."""

    max_requests: int = Field(10_000, ge=1, le=MAX_SHARD_REQUESTS, description="Requests per job.")


class Retry(_Model):
    """How often work that failed is tried again."""

    attempts: int = Field(3, ge=1, le=10, description="Tries per batch job, counting the first.")


class Output(_Model):
    """Where results go, joined to their records."""

    uri: str = Field(description="Local path (relative to the spec file), gs:// or s3:// URL; .jsonl.")


class Pipeline(_Model):
    """A batchflow pipeline."""

    version: Literal[1] = Field(description="Spec format version.")
    name: str = Field(
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        max_length=63,
        description="Unique per state store: lowercase letters, digits and hyphens.",
    )
    model: str = Field(description="Gemini model, e.g. gemini-2.5-flash.")
    source: Source
    request: Request
    batch: Batch = Batch()
    retry: Retry = Retry()
    output: Output


@dataclass(frozen=True)
class LoadedPipeline:
    """A validated pipeline and the file it came from."""

    spec: Pipeline
    path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    def resolve(self, uri: str) -> str:
        """URLs stay as they are; plain paths are relative to the spec file's folder."""
        if "://" in uri:
            return uri
        return str((self.path.parent / uri).resolve())


def find_spec_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in SPEC_SUFFIXES and f.is_file()))
        elif p.exists():
            files.append(p)
        else:
            raise SpecError("no such file or folder", file=str(p))
    return files


def load_pipelines(paths: list[Path]) -> list[LoadedPipeline]:
    """Load every pipeline under `paths`; raise SpecErrors listing every problem found."""
    errors: list[SpecError] = []
    loaded: list[LoadedPipeline] = []
    for file in find_spec_files(paths):
        try:
            loaded.extend(load_file(file))
        except SpecErrors as exc:
            errors.extend(exc.errors)
        except SpecError as exc:
            errors.append(exc)
    seen: dict[str, LoadedPipeline] = {}
    for p in loaded:
        if p.name in seen:
            errors.append(
                SpecError(
                    f"pipeline name {p.name!r} is also used in {seen[p.name].path}",
                    file=str(p.path),
                    field="name",
                )
            )
        seen.setdefault(p.name, p)
    if errors:
        raise SpecErrors(errors)
    return loaded


def load_file(file: Path) -> list[LoadedPipeline]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {exc}", file=str(file)) from None
    docs = list(load_documents(text, str(file)))
    if not docs or all(d.data is None for d in docs):
        raise SpecError("file is empty; expected a pipeline spec", file=str(file))
    errors: list[SpecError] = []
    out: list[LoadedPipeline] = []
    for doc in docs:
        try:
            out.append(LoadedPipeline(spec=_validate(doc, file), path=file))
        except SpecErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise SpecErrors(sorted(errors, key=lambda e: (e.line or 0, e.column or 0)))
    return out


def _validate(doc: Document, file: Path) -> Pipeline:
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
    try:
        spec = Pipeline.model_validate(data)
    except ValidationError as exc:
        errors.extend(_to_spec_errors(exc, doc))
        raise SpecErrors(errors) from None
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


def _to_spec_errors(exc: ValidationError, doc: Document) -> list[SpecError]:
    out = []
    for err in exc.errors():
        loc: Loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
            allowed = _fields_at(Pipeline, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            elif allowed:
                message += f" (allowed: {', '.join(allowed)})"
            out.append(doc.error(loc, message, prefer_key=True))
        elif err["type"] == "missing":
            out.append(doc.error(loc, "required field is missing", prefer_key=True))
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
