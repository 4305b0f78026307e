"""The output's columns, defined once: which a pipeline has, what each holds, its Parquet type,
and the column table in docs/spec.md (`make schema` writes it from `COLUMNS`).

A pipeline's columns follow from its spec alone, so every row of an output, and every format,
has the same ones: `key`, the kept source `columns`, then those of `COLUMNS` that apply.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..spec.models import FunctionsTool, Pipeline

if TYPE_CHECKING:
    import pyarrow as pa


def _config(spec: Pipeline):
    return spec.request.generation_config if spec.request else None


def _generation(spec: Pipeline) -> bool:
    return spec.request is not None


def _structured(spec: Pipeline) -> bool:
    config = _config(spec)
    return bool(config and config.response_mime_type == "application/json")


def _functions(spec: Pipeline) -> bool:
    return any(isinstance(t, FunctionsTool) for t in spec.tools)


def _grounded(spec: Pipeline) -> bool:
    return any(t in ("google_search", "url_context") for t in spec.tools)


def _thoughts(spec: Pipeline) -> bool:
    config = _config(spec)
    return bool(config and config.thinking_config and config.thinking_config.include_thoughts)


def _candidates(spec: Pipeline) -> bool:
    config = _config(spec)
    return bool(config and (config.candidate_count or 1) > 1)


@dataclass(frozen=True)
class Column:
    name: str
    when: str  # when a pipeline has it (docs)
    holds: str  # what it holds (docs)
    applies: Callable[[Pipeline], bool]
    arrow: Callable[[Pipeline], pa.DataType]  # its Parquet type (pyarrow imported when called)


def _pa():
    import pyarrow as pa

    return pa


USAGE_FIELDS = ("prompt_tokens", "output_tokens", "cached_tokens", "thoughts_tokens", "total_tokens")
ERROR_FIELDS = ("code", "status", "message")

COLUMNS = [
    Column(
        "text",
        "generation pipelines",
        "the answer's text (thought summaries left out)",
        _generation,
        lambda s: _pa().string(),
    ),
    Column(
        "finish_reason",
        "generation pipelines",
        "why the answer ended: `STOP`, `MAX_TOKENS`, `SAFETY`, `RECITATION`, ...",
        _generation,
        lambda s: _pa().string(),
    ),
    Column(
        "usage",
        "generation pipelines",
        "tokens: `" + "`, `".join(USAGE_FIELDS) + "` (`prompt_tokens` includes the cached ones)",
        _generation,
        lambda s: _pa().struct([(k, _pa().int64()) for k in USAGE_FIELDS]),
    ),
    Column(
        "json",
        "`response_mime_type: application/json`",
        "the answer parsed; in Parquet a struct whose fields follow the response schema (JSON text "
        "when the schema cannot map: `anyOf`, `$ref`, free-form objects)",
        _structured,
        lambda s: json_arrow_type(s) or _pa().string(),
    ),
    Column(
        "function_calls",
        "`tools` declares functions",
        "the calls the model asked for: a list of `{name, args}` (`args` as JSON text in Parquet)",
        _functions,
        lambda s: _pa().list_(_pa().struct([("name", _pa().string()), ("args", _pa().string())])),
    ),
    Column(
        "grounding",
        "`tools` has `google_search` or `url_context`",
        "what the answer was based on: `{queries: [...], sources: [{uri, title}]}`",
        _grounded,
        lambda s: _pa().struct(
            [
                ("queries", _pa().list_(_pa().string())),
                ("sources", _pa().list_(_pa().struct([("uri", _pa().string()), ("title", _pa().string())]))),
            ]
        ),
    ),
    Column(
        "thoughts",
        "`thinking_config.include_thoughts: true`",
        "the thought summaries' text",
        _thoughts,
        lambda s: _pa().string(),
    ),
    Column(
        "candidates",
        "`candidate_count` over 1",
        "every candidate: a list of `{text, finish_reason}` (the first is also in `text`)",
        _candidates,
        lambda s: _pa().list_(_pa().struct([("text", _pa().string()), ("finish_reason", _pa().string())])),
    ),
    Column(
        "tier",
        "`tier: flex` or `auto`",
        "the tier that answered: `flex` (as the service's `x-gemini-service-tier` header said) or `batch`",
        lambda s: s.tier != "batch",
        lambda s: _pa().string(),
    ),
    Column(
        "response",
        "`output.include_response: true`",
        "the whole response, as the service gave it (JSON text in Parquet and CSV)",
        lambda s: s.output.include_response,
        lambda s: _pa().string(),
    ),
    Column(
        "embedding",
        "embedding pipelines",
        "the vector",
        lambda s: s.embed is not None,
        lambda s: _pa().list_(_pa().float64()),
    ),
    Column(
        "error",
        "unless `errors.uri` sends error rows elsewhere",
        "`{code, status, message}` when the request failed for good, the prompt was blocked "
        "(status `BLOCKED`), or the answer ended for a reason in `errors.finish_reasons` "
        "(status `FINISH_REASON`); empty otherwise",
        lambda s: s.errors.uri is None,
        lambda s: _pa().struct([(k, _pa().int64() if k == "code" else _pa().string()) for k in ERROR_FIELDS]),
    ),
]
# Written as JSON text in CSV and Parquet, whatever they hold.
JSON_TEXT = {"response"}
# Spread over one CSV column per field (`usage_prompt_tokens`, `error_code`...).
CSV_SPREAD = {"usage": USAGE_FIELDS, "error": ERROR_FIELDS}


def columns_for(spec: Pipeline) -> list[Column]:
    return [c for c in COLUMNS if c.applies(spec)]


def reference_table() -> str:
    """The table of output columns in docs/spec.md."""
    rows = ["| column | when | holds |", "| --- | --- | --- |"]
    rows += [f"| `{c.name}` | {c.when} | {c.holds} |" for c in COLUMNS]
    return "\n".join(rows)


# ---------------------------------------------------------------- rows


def result_fields(result: dict[str, Any], spec: Pipeline) -> dict[str, Any]:
    """The output fields of one result line of the Batch API (only those with a value)."""
    return ResultFields(spec)(result)


class ResultFields:
    """`result_fields` for one spec, with what the spec asks for worked out once: the output
    join calls it for every row."""

    def __init__(self, spec: Pipeline) -> None:
        self.response = spec.output.include_response
        self.embed = spec.embed is not None
        self.structured = _structured(spec)
        self.functions = _functions(spec)
        self.grounded = _grounded(spec)
        self.thoughts = _thoughts(spec)
        self.candidates = _candidates(spec)
        self.tiered = spec.tier != "batch"
        self.finish_reasons = frozenset(spec.errors.finish_reasons)
        # Columns that hold the service's JSON as it came, numbers and all.
        self.verbatim = self.response or self.functions
        # A generation pipeline with no result column beyond text, finish_reason and usage.
        self.plain = _generation(spec) and not (
            self.response
            or self.embed
            or self.structured
            or self.functions
            or self.grounded
            or self.thoughts
            or self.candidates
            or self.tiered
        )

    def answer(self, result: dict[str, Any]) -> tuple[str, Any, tuple[Any, ...]] | None:
        """The text, finish reason and token counts (as USAGE_FIELDS) of a result whose fields
        are just those, as most are in a plain pipeline: an answer, not an error. None for any
        other result, and in any other pipeline."""
        if not self.plain or "error" in result:
            return None
        response = result.get("response") or {}
        candidates = response.get("candidates")
        if not candidates:
            return None  # a blocked prompt, or no answer
        first = candidates[0]
        reason = first.get("finishReason")
        if reason in self.finish_reasons:
            return None
        return _text((first.get("content") or {}).get("parts") or []), reason, _counts(response)

    def __call__(self, result: dict[str, Any]) -> dict[str, Any]:
        if (answer := self.answer(result)) is not None:
            text, reason, counts = answer
            return {
                "text": text,
                "finish_reason": reason,
                "usage": usage_of(counts),
            }
        # Fields go in in the order of COLUMNS, as CSV and Parquet have them.
        if "error" in result:
            err = result["error"] or {}
            return {"error": {k: err.get(k) for k in ERROR_FIELDS}}
        response = result.get("response") or {}
        out: dict[str, Any]
        if self.embed:
            out = {"response": response} if self.response else {}
            out["embedding"] = (response.get("embedding") or {}).get("values", [])
            return out
        candidates = response.get("candidates") or []
        feedback = response.get("promptFeedback") or {}
        if not candidates and feedback.get("blockReason"):
            out = {"usage": _usage(response)}
            if self.response:
                out["response"] = response
            why = feedback.get("blockReasonMessage")
            message = f"the prompt was blocked: {feedback['blockReason']}" + (f" ({why})" if why else "")
            out["error"] = {"code": None, "status": "BLOCKED", "message": message}
            return out
        first = candidates[0] if candidates else {}
        parts = (first.get("content") or {}).get("parts") or []
        out = {
            "text": _text(parts),
            "finish_reason": first.get("finishReason"),
            "usage": _usage(response),
        }
        if self.structured:
            with contextlib.suppress(ValueError):
                out["json"] = json.loads(out["text"])
        if self.functions:
            out["function_calls"] = [
                {"name": p["functionCall"].get("name"), "args": p["functionCall"].get("args") or {}}
                for p in parts
                if isinstance(p.get("functionCall"), dict)
            ]
        if self.grounded:
            meta = first.get("groundingMetadata") or {}
            sources = [
                {"uri": src.get("uri"), "title": src.get("title")}
                for chunk in meta.get("groundingChunks") or []
                if (src := chunk.get("web") or chunk.get("retrievedContext"))
            ]
            out["grounding"] = {"queries": meta.get("webSearchQueries") or [], "sources": sources}
        if self.thoughts:
            out["thoughts"] = "".join(p.get("text", "") for p in parts if p.get("thought"))
        if self.candidates:
            out["candidates"] = [
                {
                    "text": "".join(
                        p.get("text", "")
                        for p in (c.get("content") or {}).get("parts") or []
                        if not p.get("thought")
                    ),
                    "finish_reason": c.get("finishReason"),
                }
                for c in candidates
            ]
        if self.tiered:
            out["tier"] = result.get("tier") or "batch"
        if self.response:
            out["response"] = response
        if out["finish_reason"] in self.finish_reasons:
            out["error"] = {
                "code": None,
                "status": "FINISH_REASON",
                "message": f"the answer ended with {out['finish_reason']} (errors.finish_reasons)",
            }
        return out


def _text(parts: list[dict[str, Any]]) -> str:
    """An answer's text: its parts' that are not thoughts."""
    if len(parts) == 1 and not parts[0].get("thought") and type(text := parts[0].get("text", "")) is str:
        return text  # most answers: one step, not a generator
    return "".join(p.get("text", "") for p in parts if not p.get("thought"))


def _counts(response: dict[str, Any]) -> tuple[Any, ...]:
    """The response's token counts, in the order of USAGE_FIELDS."""
    get = (response.get("usageMetadata") or {}).get
    return (
        get("promptTokenCount", 0),
        get("candidatesTokenCount", 0),
        get("cachedContentTokenCount", 0),
        get("thoughtsTokenCount", 0),
        get("totalTokenCount", 0),
    )


def usage_of(counts: tuple[Any, ...]) -> dict[str, Any]:
    """The `usage` column's value of token counts (as _counts gives them), keyed by USAGE_FIELDS."""
    prompt, output, cached, thoughts, total = counts  # spelled out: twice as fast as a zip
    return {
        "prompt_tokens": prompt,
        "output_tokens": output,
        "cached_tokens": cached,
        "thoughts_tokens": thoughts,
        "total_tokens": total,
    }


def _usage(response: dict[str, Any]) -> dict[str, int]:
    return usage_of(_counts(response))


# ---------------------------------------------------------------- Parquet types of structured output


def json_arrow_type(spec: Pipeline) -> pa.DataType | None:
    config = _config(spec)
    schema = config and (config.response_json_schema or config.response_schema)
    return _arrow_of(schema) if schema else None


_SCALARS = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool_"}


def _arrow_of(schema: Any) -> pa.DataType | None:
    """The Arrow type of values valid under a JSON / OpenAPI schema; None when no single type fits."""
    pa = _pa()
    if not isinstance(schema, dict) or any(
        k in schema for k in ("$ref", "anyOf", "oneOf", "allOf", "any_of")
    ):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if str(k).lower() != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    kind = str(kind).lower() if kind else ("string" if "enum" in schema else None)
    if kind in _SCALARS:
        return getattr(pa, _SCALARS[kind])()
    if kind == "array":
        item = _arrow_of(schema.get("items"))
        return pa.list_(item) if item is not None else None
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict) or not props:
            return None
        fields = [(name, _arrow_of(sub)) for name, sub in props.items()]
        return pa.struct(fields) if all(t is not None for _, t in fields) else None
    return None


def fits(value: Any, kind: pa.DataType) -> bool:
    """Whether a parsed JSON value converts to `kind` without loss (else the row's `json` is left empty)."""
    pa = _pa()
    if value is None:
        return True
    if pa.types.is_struct(kind):
        if not isinstance(value, dict):
            return False
        names = {kind.field(i).name: kind.field(i).type for i in range(kind.num_fields)}
        return set(value) <= set(names) and all(fits(value.get(n), t) for n, t in names.items())
    if pa.types.is_list(kind):
        return isinstance(value, list) and all(fits(v, kind.value_type) for v in value)
    if pa.types.is_string(kind):
        return isinstance(value, str)
    if pa.types.is_boolean(kind):
        return isinstance(value, bool)
    if pa.types.is_integer(kind):
        return isinstance(value, int) and not isinstance(value, bool)
    if pa.types.is_floating(kind):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return False
