"""Render records into Batch API request lines with sandboxed Jinja2 templates."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from .errors import SourceError, SpecError
from .sources import Record
from .spec import LoadedPipeline

TEMPLATES = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_TOOLS = {
    "google_search": {"googleSearch": {}},
    "url_context": {"urlContext": {}},
    "code_execution": {"codeExecution": {}},
}


def is_template(text: str) -> bool:
    return any(marker in text for marker in ("{{", "{%", "{#"))


def tools_wire(tools: list) -> list[dict[str, Any]]:
    """The spec's `tools` as the API's Tool objects."""
    out = []
    for tool in tools:
        if isinstance(tool, str):
            out.append(_TOOLS[tool])
        else:
            out.append({"functionDeclarations": [fn.model_dump(exclude_none=True) for fn in tool.functions]})
    return out


@dataclass(frozen=True)
class Rendered:
    """One record made into one request."""

    key: str  # the user's key for the record
    hash: str  # identifies (model, key, request); the `key` of the batch input line
    line: str  # the batch input line, without newline
    record: Record


def canonical(request: dict[str, Any]) -> str:
    """The request as stable JSON: the same request always gives the same bytes."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(model: str, key: str, body: str) -> str:
    """Identity of a request: what it asks (`body`, canonical JSON), of which model, for which record."""
    return hashlib.sha256(f"{model}\n{key}\n{body}".encode()).hexdigest()[:32]


class _Constant:
    """A template without placeholders."""

    def __init__(self, text: str) -> None:
        self.text = text.removesuffix("\n")  # as Jinja renders it (keep_trailing_newline=False)

    def render(self, data: dict[str, Any]) -> str:
        return self.text


class Renderer:
    """Templates of one pipeline, compiled once and applied to each record."""

    def __init__(self, pipeline: LoadedPipeline) -> None:
        self.pipeline = pipeline
        spec = pipeline.spec
        self._key = self._compile(spec.source.key, "source.key")
        self._fixed: dict[str, Any] = {}  # the parts of every request that no template changes
        if spec.embed is not None:
            self._content = self._compile(spec.embed.content, "embed.content")
            self._title = self._compile(spec.embed.title, "embed.title")
            self._fixed = {
                k: v
                for k, v in {
                    "taskType": spec.embed.task_type,
                    "outputDimensionality": spec.embed.output_dimensionality,
                }.items()
                if v is not None
            }
            return
        request = spec.request
        self._system = self._compile(request.system, "request.system")
        self._prompt = self._compile(request.prompt, "request.prompt")
        if request.generation_config:
            self._fixed["generationConfig"] = request.generation_config.to_wire()
        if request.safety_settings:
            self._fixed["safetySettings"] = [s.model_dump() for s in request.safety_settings]
        if spec.tools:
            self._fixed["tools"] = tools_wire(spec.tools)

    def _compile(self, text: str | None, field: str):
        if text is None:
            return None
        if not is_template(text):
            return _Constant(text)  # a Jinja render costs ~10 us even for plain text
        try:
            return TEMPLATES.from_string(text)
        except TemplateError as exc:
            raise SpecError(f"template error: {exc}", file=str(self.pipeline.path), field=field) from None

    def _render(self, template, record: Record, field: str, key: str) -> str:
        try:
            return template.render(record.data)
        except UndefinedError as exc:
            raise SourceError(
                f"record {key!r}: {field}: {exc.message}", uri=record.uri, line=record.line
            ) from None
        except TemplateError as exc:
            raise SourceError(f"record {key!r}: {field}: {exc}", uri=record.uri, line=record.line) from None

    def request(self, record: Record, key: str) -> dict[str, Any]:
        """The request (REST form) for one record: GenerateContentRequest or EmbedContentRequest."""
        if self.pipeline.spec.embed is not None:
            text = self._render(self._content, record, "embed.content", key)
            request: dict[str, Any] = {"content": {"parts": [{"text": text}]}, **self._fixed}
            if self._title is not None:
                request["title"] = self._render(self._title, record, "embed.title", key)
            return request
        prompt = self._render(self._prompt, record, "request.prompt", key)
        request = {"contents": [{"role": "user", "parts": [{"text": prompt}]}], **self._fixed}
        if self._system is not None:
            system = self._render(self._system, record, "request.system", key)
            request["systemInstruction"] = {"parts": [{"text": system}]}
        return request

    def render(self, records: Iterator[Record]) -> Iterator[Rendered]:
        model = self.pipeline.spec.model
        for position, record in enumerate(records):
            if self._key is None:
                key = str(position)
            else:
                key = self._render(self._key, record, "source.key", f"#{position}").strip()
                if not key:
                    raise SourceError("source.key renders to an empty key", uri=record.uri, line=record.line)
            body = canonical(self.request(record, key))
            digest = request_hash(model, key, body)
            line = f'{{"key":"{digest}","request":{body}}}'
            yield Rendered(key=key, hash=digest, line=line, record=record)
