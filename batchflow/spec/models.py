"""Pipeline spec: pydantic models, the single source of truth (JSON Schema and docs derive from them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from .units import Duration, Size

SPEC_SUFFIXES = (".yaml", ".yml")
PROJECT_FILES = ("batchflow.yaml", "batchflow.yml")  # project files, not pipeline specs (project.py)
# The Batch API accepts input files up to 2 GB; one job's file is one shard.
MAX_SHARD_REQUESTS = 1_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


URL_SCHEMES = ("gs", "s3", "file", "memory")  # fsspec protocols a spec may name
HarmCategory = Literal[
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
]
HarmThreshold = Literal[
    "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"
]
TaskType = Literal[
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
]
# How a candidate can end (google.genai.types.FinishReason, wire names).
FinishReason = Literal[
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "RECITATION",
    "LANGUAGE",
    "OTHER",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "MALFORMED_FUNCTION_CALL",
    "IMAGE_SAFETY",
    "UNEXPECTED_TOOL_CALL",
    "TOO_MANY_TOOL_CALLS",
    # google-genai 3.x: stopped at the per-call output limit (long decode on Gemini 4), an
    # answer the service could not form, a multi-turn thought signature missing.
    "CONTINUATION",
    "MALFORMED_RESPONSE",
    "MISSING_THOUGHT_SIGNATURE",
]
# Answers that carry no usable text: errors unless the spec says otherwise.
DEFAULT_ERROR_FINISH_REASONS: tuple[FinishReason, ...] = (
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "MALFORMED_FUNCTION_CALL",
    "IMAGE_SAFETY",
    "TOO_MANY_TOOL_CALLS",
    "MALFORMED_RESPONSE",
)
BuiltinTool = Literal["google_search", "url_context", "code_execution"]
# The Batch API takes input files up to 2 GB and inline requests up to 20 MB in all.
MAX_FILE_BYTES = 2 * 1024**3
MAX_INLINE_BYTES = 20 * 1024**2


class CsvOptions(_Model):
    """How CSV sources are read."""

    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator.")
    quotechar: str = Field('"', min_length=1, max_length=1, description="Quote character.")
    encoding: str = Field("utf-8", description="Text encoding of the file.")
    types: dict[str, Literal["string", "integer", "number", "boolean"]] = Field(
        {},
        description="Column types, e.g. {price: number, stock: integer}: templates and outputs see "
        "typed values (an empty cell is null). Undeclared columns stay strings; nothing is inferred.",
    )


class Source(_Model):
    """Where the records come from: files (`uri`), or another pipeline's results (`pipeline`: this
    pipeline is then a stage downstream of it)."""

    uri: str | None = Field(
        None, description="Local path (relative to the spec file), gs:// or s3:// URL; globs allowed."
    )
    pipeline: str | None = Field(
        None,
        description="Another pipeline whose answered rows are the records (its key, kept columns, "
        "text, json, usage...; error rows are left out), read from its state, whatever its output "
        "format. It is applied first; its state must be in the same store.",
    )
    where: str | None = Field(
        None,
        description="With `pipeline`: keep only the rows for which this expression is true, e.g. "
        "\"json.label == 'complaint'\" or 'usage.output_tokens > 100'.",
    )
    group_by: str | None = Field(
        None,
        description="With `pipeline`: one record per value of this template, e.g. '{{ json.book }}', "
        "holding `group` (the value) and `rows` (its rows, in the upstream's order): the reduce step.",
    )
    format: Literal["jsonl", "csv", "parquet", "text"] | None = Field(
        None, description="Record format; by default taken from the file extension."
    )
    key: str | None = Field(
        None,
        description="Template of each record's unique key, e.g. '{{ sku }}'; default: a digest of the "
        "record's content (inserting a record changes no other key; exact copies are an error).",
    )
    csv: CsvOptions | None = Field(None, description="Options for CSV sources.")

    @model_validator(mode="after")
    def _files_or_pipeline(self):
        if (self.uri is None) == (self.pipeline is None):
            raise ValueError("set uri (files) or pipeline (another pipeline's results), one of the two")
        if self.pipeline is None and (self.where is not None or self.group_by is not None):
            raise ValueError("where and group_by read another pipeline's results: set source.pipeline")
        if self.pipeline is not None and (self.format is not None or self.csv is not None):
            raise ValueError("format and csv describe files: a pipeline's results have neither")
        return self

    @property
    def key_template(self) -> str | None:
        """The key template in force: a stage's records keep their upstream key (or their group)."""
        if self.key is not None or self.pipeline is None:
            return self.key
        return "{{ group }}" if self.group_by is not None else "{{ key }}"


class ThinkingConfig(_Model):
    """How much the model may think before it answers: a level (Gemini 3 and 4) or a budget of
    tokens (Gemini 2.5). Which levels and budgets each model takes: `batchflow models`."""

    thinking_budget: int | None = Field(
        None, ge=-1, le=32768, description="Gemini 2.5 models: tokens; 0 off, -1 dynamic."
    )
    thinking_level: Literal["MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH"] | None = Field(
        None, description="Gemini 3 and 4 models: how hard to think."
    )
    include_thoughts: bool | None = Field(None, description="Return thought summaries.")

    @model_validator(mode="after")
    def _one_of(self):
        if self.thinking_budget is not None and self.thinking_level is not None:
            raise ValueError("set thinking_level or thinking_budget, not both (the service refuses both)")
        return self


class GenerationConfig(_Model):
    """Passed to the model as the request's generationConfig."""

    temperature: float | None = Field(None, ge=0, le=2, description="Randomness of the answer, 0 to 2.")
    top_p: float | None = Field(None, ge=0, le=1, description="Nucleus sampling: cumulative probability.")
    top_k: int | None = Field(None, ge=1, description="Sample from this many likeliest tokens.")
    max_output_tokens: int | None = Field(None, ge=1, description="Longest answer, in tokens.")
    candidate_count: int | None = Field(None, ge=1, le=8, description="Answers per request.")
    stop_sequences: list[str] | None = Field(
        None, max_length=5, description="Up to 5 texts that end the answer."
    )
    seed: int | None = Field(None, description="Fixed seed, for more repeatable answers.")
    presence_penalty: float | None = Field(None, description="Penalty for tokens already used.")
    frequency_penalty: float | None = Field(None, description="Penalty growing with each use of a token.")
    response_mime_type: Literal["text/plain", "application/json", "text/x.enum"] | None = Field(
        None, description="application/json for structured output."
    )
    response_schema: dict[str, Any] | None = Field(
        None, description="OpenAPI-style schema of the response; {$ref: file} reads a JSON file."
    )
    response_json_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema of the response; {$ref: file} reads a JSON file."
    )
    thinking_config: ThinkingConfig | None = Field(None, description="Thinking budget or level.")

    def to_wire(self) -> dict[str, Any]:
        """REST (camelCase) form; schema bodies are passed through untouched."""
        out = {
            _camel(k): v for k, v in self.model_dump(exclude_none=True, exclude={"thinking_config"}).items()
        }
        if self.thinking_config:
            out["thinkingConfig"] = {
                _camel(k): v for k, v in self.thinking_config.model_dump(exclude_none=True).items()
            }
        return out


class SafetySetting(_Model):
    """Blocking threshold for one harm category."""

    category: HarmCategory = Field(description="Harm category.")
    threshold: HarmThreshold = Field(description="Block content at or above this probability.")


class Request(_Model):
    """How each record becomes a GenerateContentRequest. Strings are Jinja2 templates over the record."""

    system: str | None = Field(None, description="System instruction (template).")
    prompt: str = Field(description="User prompt (template).")
    files: list[str] = Field(
        [], description="File parts (templates): local paths (uploaded once) or Files API names/URIs."
    )
    generation_config: GenerationConfig | None = None
    safety_settings: list[SafetySetting] = Field([], description="Per-category blocking thresholds.")
    labels: dict[str, str] = Field({}, description="Labels sent with every request (for billing reports).")


class Embed(_Model):
    """How each record becomes an embedding request (instead of `request`)."""

    content: str = Field(description="Text to embed (template).")
    title: str | None = Field(None, description="Document title (template), for RETRIEVAL_DOCUMENT.")
    task_type: TaskType | None = Field(None, description="What the embedding is for.")
    output_dimensionality: int | None = Field(None, ge=1, le=3072, description="Size of each embedding.")


class Cache(_Model):
    """Shared context cached once per run and referenced by every request (cheaper input tokens)."""

    system: str | None = Field(None, description="System instruction held in the cache (not a template).")
    contents: list[str] = Field([], description="Texts held in the cache.")
    files: list[str] = Field([], description="Local files (uploaded) or Files API names held in the cache.")
    ttl: Duration = Field(3600.0, ge=600, le=7 * 86400, description="How long the cache lives; 10m to 7d.")


class FunctionDeclaration(_Model):
    """A function the model may ask to call."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$", description="Function name.")
    description: str | None = Field(None, description="What the function does, for the model.")
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments.")


class FunctionsTool(_Model):
    """`- functions: [...]` in `tools`."""

    functions: list[FunctionDeclaration] = Field(min_length=1, description="Function declarations.")


Tier = Literal["batch", "flex", "auto", "standard", "priority"]


class Flex(_Model):
    """How requests go out on the Flex tier (`tier: flex`)."""

    concurrency: int = Field(
        8, ge=1, le=256, description="Calls at once; shed (503) and rate-limited (429) calls are retried."
    )
    auto_below: int = Field(
        1000,
        ge=1,
        description="With `tier: auto`: a run with fewer new requests than this goes on flex, a larger "
        "one by batch (a stage always goes on flex).",
    )


class Batch(_Model):
    """How requests are grouped into batch jobs."""

    max_requests: int = Field(10_000, ge=1, le=MAX_SHARD_REQUESTS, description="Requests per job.")
    max_bytes: Size = Field(
        1_000_000_000, ge=1024, le=MAX_FILE_BYTES, description="Bytes per job input file; at most 2 GB."
    )
    inline_below: Size = Field(
        0,
        ge=0,
        le=MAX_INLINE_BYTES,
        description="Jobs smaller than this are sent inline instead of as a file; at most 20 MB.",
    )
    max_concurrent_jobs: int | None = Field(
        None,
        ge=1,
        description="Jobs of this pipeline at work at once; further shards wait and start as jobs "
        "finish. Default: no limit.",
    )
    staging: str | None = Field(
        None,
        description="Vertex AI backend: a gs:// prefix for input shards and job outputs; default: "
        "staging/ beside a gs:// state store.",
    )
    pending_timeout: Duration = Field(
        36 * 3600.0,
        ge=1,
        description="A job still pending (not yet running) this long after it was created is "
        "cancelled and its requests sent again in a new job. The default leaves the service its "
        "24 h target.",
    )


class Budget(_Model):
    """What an apply may spend."""

    max_usd: float | None = Field(
        None,
        gt=0,
        description="apply refuses, before anything is uploaded, to send requests whose estimated cost "
        "(Batch Mode prices) is over this many US dollars. In a matrix: each variant's limit.",
    )
    total_usd: float | None = Field(
        None,
        gt=0,
        description="A matrix: what its variants' new requests may cost together; over it, apply "
        "refuses every variant before anything is uploaded.",
    )

    @model_validator(mode="after")
    def _a_limit(self):
        if self.max_usd is None and self.total_usd is None:
            raise ValueError(
                "set max_usd (per pipeline or variant) or total_usd (a matrix's variants together)"
            )
        return self


class Retry(_Model):
    """How often work that failed is tried again."""

    attempts: int = Field(3, ge=1, le=10, description="Tries per request, across jobs, counting the first.")


class Output(_Model):
    """Where results go, joined to their records in source order."""

    uri: str = Field(description="Local path (relative to the spec file), gs:// or s3:// URL.")
    format: Literal["jsonl", "csv", "parquet"] | None = Field(
        None, description="By default taken from the file extension."
    )
    columns: list[str] = Field([], description="Source fields copied beside each result.")
    include_response: bool = Field(
        False, description="Add a `response` column: the whole response object, as the service gave it."
    )
    max_shrink: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of the last output's records that may vanish from the source; beyond it "
        "plan and apply stop unless given --allow-shrink.",
    )


class Errors(_Model):
    """Requests that still fail after every attempt: where they go, and how many the run tolerates.

    By default any failed request makes `apply` exit 3; `max_count` and `max_rate`
    tolerate some (a run fails when either is exceeded)."""

    uri: str | None = Field(
        None,
        description="Local path (relative to the spec file), gs:// or s3:// URL; JSONL. Default: the output.",
    )
    max_count: int | None = Field(None, ge=0, description="Failed requests tolerated; default 0 (none).")
    max_rate: float | None = Field(
        None, ge=0, le=1, description="Share of failed requests tolerated, 0 to 1 (e.g. 0.01 for 1%)."
    )
    finish_reasons: list[FinishReason] = Field(
        list(DEFAULT_ERROR_FINISH_REASONS),
        description="Answers that ended for one of these reasons are error rows (their text kept). "
        "Add MAX_TOKENS to count cut answers too; [] counts none.",
    )

    def exceeded(self, errors: int, records: int) -> str | None:
        """Why `errors` failed requests out of `records` break this policy; None if they do not."""
        if self.max_count is None and self.max_rate is None:
            return "none is tolerated unless errors.max_count or errors.max_rate says so" if errors else None
        if self.max_count is not None and errors > self.max_count:
            return f"over errors.max_count {self.max_count}"
        if self.max_rate is not None and records and errors / records > self.max_rate:
            return f"{errors / records:.1%} is over errors.max_rate {self.max_rate:g}"
        return None


Metric = Literal["exact", "contains", "regex", "number", "json_equal"]
# The judge's answer: what the response schema asks of it.
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "score": {
            "type": "NUMBER",
            "minimum": 0.0,
            "maximum": 1.0,  # floats, as the Vertex SDK writes them: the same request on both
            "description": "0 (wrong) to 1 (right), by the rubric",
        },
        "reason": {"type": "STRING", "description": "why, in a sentence"},
    },
    "required": ["score", "reason"],
    "propertyOrdering": ["score", "reason"],
}


class Judge(_Model):
    """A model that grades each answer: a stage of its own (state, cost, plan lines), whose
    requests are content-addressed like any others, so an answer that did not change is never
    judged again."""

    model: str = Field(
        pattern=r"^(models/)?[a-z0-9][a-z0-9.\-]*$", description="The judging model, e.g. gemini-4-argon."
    )
    prompt: str = Field(
        description="The rubric (template) over the record's fields, `answer` (the answer to grade) "
        "and `expected` (the reference, when set). The judge answers {score: 0 to 1, reason}."
    )
    system: str | None = Field(None, description="System instruction of the judge (template).")
    pass_score: float = Field(
        0.5, ge=0, le=1, description="A verdict of at least this score counts as a correct answer."
    )
    tier: Tier | None = Field(None, description="How the judge's requests go; default: the pipeline's tier.")
    thinking_level: Literal["MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH"] | None = Field(
        None, description="How hard the judge thinks (Gemini 3 and 4)."
    )


class Score(_Model):
    """How each answer is scored, from 0 to 1: by a metric against a reference, or by a judge."""

    expected: str | None = Field(
        None, description="The reference answer (template over the record), e.g. '{{ answer }}'."
    )
    answer: str = Field(
        "{{ text }}",
        description="The answer to score (template over the output row: text, json, kept columns), "
        "e.g. '{{ json.label }}'.",
    )
    metric: Metric | None = Field(
        None,
        description="exact (equal once trimmed and case-folded), contains (the reference is in the "
        "answer), regex (the reference is a pattern the answer matches), number (the first number "
        "in the answer is within `tolerance` of the reference), json_equal (equal as JSON).",
    )
    case_sensitive: bool = Field(False, description="exact, contains and regex: tell case apart.")
    trim: bool = Field(True, description="exact and contains: ignore spaces around the texts.")
    tolerance: float = Field(0, ge=0, description="number: the largest difference that scores 1.")
    judge: Judge | None = Field(None, description="Grade with a model instead of a metric.")

    @model_validator(mode="after")
    def _metric_or_judge(self):
        if (self.metric is None) == (self.judge is None):
            raise ValueError("set metric (compare with expected) or judge (a model grades), one of the two")
        if self.metric is not None and self.expected is None:
            raise ValueError(f"metric {self.metric} compares the answer with `expected`: set it")
        return self


# Where a matrix axis may point: the model, or a field of request, generation_config or embed.
MATRIX_ROOTS = ("request.", "generation_config.", "embed.")
MAX_VARIANTS = 256


def is_axis(key: object) -> bool:
    """Whether a matrix key names something a variant may change."""
    return key == "model" or str(key).startswith(MATRIX_ROOTS)


def matrix_problems(matrix: dict[Any, Any]) -> Iterator[tuple[tuple[Any, ...], str, bool]]:
    """What is wrong with a matrix: (where under `matrix`, what, whether it is the key's
    problem rather than a value's). The loader reports each at its line; the model, the first."""
    count = 1
    for key, values in matrix.items():
        if not is_axis(key):
            hint = "use `model`, or a path under request., generation_config. or embed."
            yield (key,), f"matrix key {key!r}: {hint}", True
        elif not isinstance(values, list) or not values:
            yield (key,), "give a list of at least one value", False
        else:
            seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
            for i, text in enumerate(seen):
                if text in seen[:i]:
                    yield (key, i), f"{values[i]!r} is listed twice", False
            count *= len(values)
    if count > MAX_VARIANTS:
        yield (), f"{count} combinations; at most {MAX_VARIANTS} variants (split the matrix into specs)", True


class Pipeline(_Model):
    """A batchflow pipeline."""

    version: Literal[1] = Field(description="Spec format version.")
    name: str = Field(
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        max_length=63,
        description="Unique per state store: lowercase letters, digits and hyphens.",
    )
    model: str = Field(
        pattern=r"^(models/)?[a-z0-9][a-z0-9.\-]*$",
        description="Gemini model, e.g. gemini-3.8-flash or gemini-embedding-2 (`batchflow models`).",
    )
    labels: dict[str, str] = Field({}, description="Free-form labels, shown by `status`.")
    backend: Literal["gemini", "vertex"] | None = Field(
        None, description="Where jobs run, overriding BATCHFLOW_BACKEND: gemini (Developer API) or vertex."
    )
    state: str | None = Field(None, description="State store for this pipeline, overriding --state.")
    source: Source
    request: Request | None = Field(None, description="Generation requests (or `embed`).")
    embed: Embed | None = Field(None, description="Embedding requests (or `request`).")
    cache: Cache | None = None
    tools: list[
        Annotated[
            Annotated[BuiltinTool, Tag("name")] | Annotated[FunctionsTool, Tag("functions")],
            # Pick the branch by shape, so a misspelled name gets one clear error, not one per branch.
            Discriminator(lambda v: "name" if isinstance(v, str) else "functions"),
        ]
    ] = Field(
        [],
        description="Tools the model may use: google_search, url_context, code_execution, {functions: [...]}",
    )
    tier: Tier = Field(
        "batch",
        description="How requests are sent: batch (Batch Mode jobs: half price, up to 24 h), flex "
        "(generateContent calls on the Flex tier: half price, minutes, best effort; each answer is "
        "saved as it arrives), auto (flex for small work and for stages, batch for large), or "
        "standard and priority (calls at the full price and above, for urgent work).",
    )
    flex: Flex = Flex()
    batch: Batch = Batch()
    budget: Budget | None = None
    retry: Retry = Retry()
    output: Output
    errors: Errors = Errors()
    matrix: dict[str, list[Any]] | None = Field(
        None,
        description="Run every combination of these values as a variant of its own (own state, shards "
        "and cost), written together in one long-form output, e.g. {model: [gemini-3.8-flash, "
        "gemini-4-argon], generation_config.thinking_config.thinking_level: [LOW, HIGH]}. Keys: "
        "`model`, or a field of `request`, `generation_config` or `embed` by its path.",
    )
    score: Score | None = Field(
        None, description="Score each answer (a `score` column; `batchflow report` compares variants)."
    )

    @model_validator(mode="after")
    def _matrix_axes(self):
        for place, message, _ in matrix_problems(self.matrix or {}):  # the loader says them all
            raise ValueError(".".join(["matrix", *map(str, place)]) + f": {message}")
        return self


@dataclass(frozen=True)
class Member:
    """What a pipeline made from a matrix or scored spec is to it: a variant (one combination
    of the matrix's values), or the judge of one."""

    group: str  # the spec's name: its long-form output and report
    axes: tuple[tuple[str, Any], ...] = ()  # (column, value) per matrix axis
    judge: bool = False
    variants: int = 1  # how many the spec has: its output is written only with all of them at hand


@dataclass(frozen=True)
class LoadedPipeline:
    """A validated pipeline and the file it came from."""

    spec: Pipeline
    path: Path
    line: int | None = None  # where its `name` is written, for errors about the pipeline as a whole
    # Where `source.pipeline` is written, for errors about the stage's upstream.
    source_line: int | None = field(default=None, compare=False)
    # A stage's run.graph.Upstream (its pipeline and store), set when the graph is linked.
    upstream: Any = field(default=None, compare=False)
    member: Member | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def resolve(self, uri: str) -> str:
        """URLs stay as they are; plain paths are relative to the spec file's folder."""
        if "://" in uri:
            return uri
        return str((self.path.parent / uri).resolve())
