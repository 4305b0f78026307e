"""Render records into Batch API request lines with sandboxed Jinja2 templates."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment

from ..errors import SourceError, SpecError
from ..spec import refusals
from ..spec.models import LoadedPipeline
from ..spec.tokens import PART_TOKENS, file_tokens
from .sources import Record

TEMPLATES = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
# Stand-ins written into shard files for what only exists once apply has made it: the name of
# an uploaded file, of the context cache. They keep a request's hash about its content, and
# are swapped for the real names when a shard is uploaded (see `resolve_line`).
FILE_PLACEHOLDER = "batchflow://file/"
CACHE_PLACEHOLDER = "batchflow://cache/"
_TOOLS: dict[str, dict[str, Any]] = {
    "google_search": {"googleSearch": {}},
    "url_context": {"urlContext": {}},
    "code_execution": {"codeExecution": {}},
}


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Template:
    """Compiling costs about 1 ms; pipelines of one repository share most of their templates,
    and validate, plan and apply each build a Renderer per pipeline."""
    return TEMPLATES.from_string(text)


def is_template(text: str) -> bool:
    return any(marker in text for marker in ("{{", "{%", "{#"))


def file_digest(uri: str) -> str:
    """sha256 of a file's content, local or through fsspec."""
    digest = hashlib.sha256()
    try:
        with fsspec.open(uri, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:  # gcsfs says only its own URL path (b/bucket/o/name%2F...)
        raise SourceError("file not found", uri=uri) from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read file: {exc}", uri=uri) from None
    return digest.hexdigest()


def remote_file_uri(ref: str) -> str | None:
    """A reference to a file already on the Files API (files/abc, or its https URI)."""
    if ref.startswith("files/") or (ref.startswith("https://") and "/files/" in ref):
        return ref
    return None


@dataclass
class FileRef:
    path: str
    mime_type: str
    tokens: int = PART_TOKENS  # input tokens the service counts for it (see tokens.py)


class Files:
    """Local (or gs://, s3://) files named by a pipeline, each read once to learn its digest."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.seen: dict[str, FileRef] = {}  # digest -> file
        self._digests: dict[str, str] = {}  # resolved path -> digest
        self._tokens: dict[str, int] = {}  # resolved path -> input tokens

    def part(self, ref: str) -> dict[str, Any]:
        """The fileData part for `ref`: as given for Files API names, a placeholder otherwise."""
        remote = remote_file_uri(ref)
        if remote is not None:
            mime = mimetypes.guess_type(remote)[0] or "application/octet-stream"
            return {"fileData": {"fileUri": remote, "mimeType": mime}}
        path = ref if "://" in ref else str((self.base / ref).resolve())
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if refused := refusals.mime_type(mime):
            raise SourceError(f"the service would refuse this file: {refused}", uri=path)
        if path not in self._digests:
            self._digests[path] = file_digest(path)
            self._tokens[path] = file_tokens(path, mime)
        digest = self._digests[path]
        self.seen[digest] = FileRef(path, mime, self._tokens[path])
        return {"fileData": {"fileUri": FILE_PLACEHOLDER + digest, "mimeType": mime}}


def cache_parts(pipeline: LoadedPipeline, files: Files) -> dict[str, Any]:
    """The cache's content (REST form); its digest names the cache in requests."""
    cache = pipeline.spec.cache
    assert cache is not None
    body: dict[str, Any] = {}
    parts = [{"text": t} for t in cache.contents] + [files.part(f) for f in cache.files]
    if parts:
        body["contents"] = [{"role": "user", "parts": parts}]
    if cache.system:
        body["systemInstruction"] = {"parts": [{"text": cache.system}]}
    if pipeline.spec.tools:
        body["tools"] = tools_wire(pipeline.spec.tools)  # with a cache, tools live in the cache
    return body


def resolve_line(line: str, names: dict[str, str]) -> str:
    """Swap placeholders for the names apply made (`names`: placeholder -> name)."""
    if "batchflow://" not in line:
        return line
    for placeholder, name in names.items():
        line = line.replace(placeholder, name)
    return line


def tools_wire(tools: list) -> list[dict[str, Any]]:
    """The spec's `tools` as the API's Tool objects."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, str):
            out.append(_TOOLS[tool])
        else:
            out.append({"functionDeclarations": [fn.model_dump(exclude_none=True) for fn in tool.functions]})
    return out


@dataclass(slots=True)  # made per record: a frozen one costs 4x as much to build
class Rendered:
    """One record made into one request."""

    key: str  # the user's key for the record
    hash: str  # identifies (model, key, request); the `key` of the batch input line
    line: str  # the batch input line, without newline
    record: Record


def cache_digest(model: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(f"{model}\n{canonical(body)}".encode()).hexdigest()[:32]


# A str as json.dumps(..., ensure_ascii=False) writes it, with the same C encoder.
_string = json.encoder.encode_basestring


def canonical(request: dict[str, Any]) -> str:
    """The request as stable JSON: the same request always gives the same bytes."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_key(data: dict[str, Any]) -> str:
    """The default key of a record: a digest of its content, so that inserting a record
    does not change the keys (and the requests) of those after it."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def request_hash(model: str, key: str, body: str) -> str:
    """Identity of a request: what it asks (`body`, canonical JSON), of which model, for which record."""
    return hashlib.sha256(f"{model}\n{key}\n{body}".encode()).hexdigest()[:32]


class _Constant:
    """A template without placeholders."""

    def __init__(self, text: str) -> None:
        self.text = text.removesuffix("\n")  # as Jinja renders it (keep_trailing_newline=False)

    def render(self, data: dict[str, Any]) -> str:
        return self.text


class _Template:
    """A compiled Jinja2 template, rendered without Jinja's per-call merging of its globals
    into a new context (most of the cost of a small render)."""

    def __init__(self, template: Template) -> None:
        self.template = template
        self.globals = dict(template.globals)

    def render(self, data: dict[str, Any]) -> str:
        context = self.template.new_context({**self.globals, **data}, shared=True)
        return self.template.environment.concat(self.template.root_render_func(context))


class _Fields(_Template):
    """A template of text and fields only (`Hi {{ name }}`, `{{ item.title }}`), rendered by
    plain lookups. Whenever a lookup is not a plain one (a missing field, a value that is not a
    mapping, a name a dict method also has) the record goes to Jinja, which renders it, or
    raises, exactly as it always does: the fast path never decides anything Jinja would not."""

    def __init__(self, template: Template, pieces: list[str | tuple[str, ...]]) -> None:
        super().__init__(template)
        self.pieces = pieces
        self._format = None  # for fields without dots, the text as a str.format pattern
        if all(isinstance(p, str) or len(p) == 1 for p in pieces):
            self._format = "".join(
                p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else "{}" for p in pieces
            ).format
            self._names = [p[0] for p in pieces if not isinstance(p, str)]

    def render(self, data: dict[str, Any]) -> str:
        if self._format is not None and type(data) is dict:
            try:  # one C call per step instead of a Python step per piece
                return self._format(*map(str, map(data.__getitem__, self._names)))
            except KeyError:
                return super().render(data)
        out = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value: Any = data
            for name in piece:
                if type(value) is not dict or name not in value:
                    return super().render(data)
                value = value[name]
            out.append(value if type(value) is str else str(value))
        return "".join(out)


def compile_template(text: str) -> _Constant | _Fields | _Template:
    """The cheapest renderer that renders `text` exactly as Jinja does."""
    if not is_template(text):
        return _Constant(text)  # a Jinja render costs ~10 us even for plain text
    template = _compiled(text)
    pieces = _plain_pieces(text)
    return _Fields(template, pieces) if pieces is not None else _Template(template)


def _plain_pieces(text: str) -> list[str | tuple[str, ...]] | None:
    """Text and field paths, if the template is nothing more; None otherwise."""
    try:
        body = TEMPLATES.parse(text).body
    except TemplateError:
        return None
    pieces: list[str | tuple[str, ...]] = []
    for node in body:
        if not isinstance(node, nodes.Output):
            return None
        for item in node.nodes:
            if isinstance(item, nodes.TemplateData):
                pieces.append(item.data)
                continue
            path: list[str] = []
            while isinstance(item, nodes.Getattr):
                path.append(item.attr)
                item = item.node
            # dict attributes (items, keys...) are what Jinja's getattr finds first: not plain.
            if not isinstance(item, nodes.Name) or any(hasattr(dict, a) for a in path):
                return None
            pieces.append((item.name, *reversed(path)))
    return pieces


class Renderer:
    """Templates of one pipeline, compiled once and applied to each record."""

    def __init__(self, pipeline: LoadedPipeline, files: Files | None = None) -> None:
        self.pipeline = pipeline
        spec = pipeline.spec
        self._key = self._compile(spec.source.key_template, "source.key")
        self._fixed: dict[str, Any] = {}  # the parts of every request that no template changes
        self.files = files or Files(pipeline.path.parent)
        self.cache: dict[str, Any] | None = None
        self._order: list[tuple[str, str]] | None = None  # (field, its JSON name and colon), sorted
        self._plain: tuple | None = None  # render_plain's layout; (): not plain
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
        assert request is not None  # a spec has request or embed
        self._system = self._compile(request.system, "request.system")
        if isinstance(self._system, _Constant):  # the same for every record
            self._fixed["systemInstruction"] = {"parts": [{"text": self._system.text}]}
            self._system = None
        self._prompt = self._compile(request.prompt, "request.prompt")
        self._files = [self._compile(f, f"request.files[{i}]") for i, f in enumerate(request.files)]
        if request.generation_config:
            self._fixed["generationConfig"] = request.generation_config.to_wire()
        if request.safety_settings:
            self._fixed["safetySettings"] = [s.model_dump() for s in request.safety_settings]
        if request.labels:
            self._fixed["labels"] = request.labels
        if spec.cache is not None:
            self.cache = cache_parts(pipeline, self.files)
            self._fixed["cachedContent"] = CACHE_PLACEHOLDER + cache_digest(spec.model, self.cache)
        elif spec.tools:
            self._fixed["tools"] = tools_wire(spec.tools)

    @functools.cached_property
    def _fixed_json(self) -> dict[str, str]:
        """The parts of every request that no template changes, serialized once."""
        return {k: canonical(v) for k, v in self._fixed.items()}

    def _compile(self, text: str | None, field: str):
        if text is None:
            return None
        try:
            return compile_template(text)
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
        parts: list[dict[str, Any]] = [{"text": prompt}]
        for i, template in enumerate(self._files):
            ref = self._render(template, record, f"request.files[{i}]", key).strip()
            if ref:  # an empty rendering means: no file for this record
                try:
                    parts.append(self.files.part(ref))
                except SourceError as exc:
                    raise SourceError(
                        f"record {key!r}: request.files[{i}]: {exc}", uri=record.uri, line=record.line
                    ) from None
        request = {"contents": [{"role": "user", "parts": parts}], **self._fixed}
        if self._system is not None:
            system = self._render(self._system, record, "request.system", key)
            request["systemInstruction"] = {"parts": [{"text": system}]}
        return request

    def body(self, record: Record, key: str) -> str:
        """canonical(self.request(record, key)), byte for byte, built from pieces: the parts no
        template changes are serialized once, per record only the rendered texts are encoded."""
        fields = dict(self._fixed_json)
        if self.pipeline.spec.embed is not None:
            text = self._render(self._content, record, "embed.content", key)
            fields["content"] = '{"parts":[{"text":' + _string(text) + "}]}"
            if self._title is not None:
                fields["title"] = _string(self._render(self._title, record, "embed.title", key))
        else:
            prompt = self._render(self._prompt, record, "request.prompt", key)
            parts = ['{"text":' + _string(prompt) + "}"]
            for i, template in enumerate(self._files):
                ref = self._render(template, record, f"request.files[{i}]", key).strip()
                if ref:
                    try:
                        parts.append(canonical(self.files.part(ref)))
                    except SourceError as exc:
                        raise SourceError(
                            f"record {key!r}: request.files[{i}]: {exc}", uri=record.uri, line=record.line
                        ) from None
            fields["contents"] = '[{"parts":[' + ",".join(parts) + '],"role":"user"}]'
            if self._system is not None:
                system = self._render(self._system, record, "request.system", key)
                fields["systemInstruction"] = '{"parts":[{"text":' + _string(system) + "}]}"
        if self._order is None:  # every record has the same fields
            self._order = [(k, _string(k) + ":") for k in sorted(fields)]
        return "{" + ",".join([name + fields[k] for k, name in self._order]) + "}"

    def render_plain(self, datas: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str]] | None:
        """The keys, hashes and batch input lines `render` makes of records (their data), in one
        loop with no call per template: for pipelines whose key, prompt and system are text and
        fields without dots, and that name no files. None when the pipeline is not such, or any
        record is not plain (a missing field, an empty key): `render`, taking the records one by
        one, then finds the same or raises its error. A worker's 300k records, parsing included:
        2.7-3.1 s of CPU this way, 3.7-3.9 s record by record."""
        if self._plain is None:
            self._plain = self._plain_layout() or ()
        if not self._plain or not set(map(type, datas)) <= {dict}:
            return None
        key_format, key_names, key_field, texts, segments = self._plain
        one = len(texts) == 1
        if one:
            ((text, names),) = texts
            head, tail = segments
        prefix = self.pipeline.spec.model + "\n"
        sha256 = hashlib.sha256
        keys: list[str] = []
        hashes: list[str] = []
        lines: list[str] = []
        try:
            for data in datas:
                get = data.__getitem__
                if key_field is not None:
                    key = str(get(key_field)).strip()
                else:
                    key = key_format(*map(str, map(get, key_names))).strip()
                if not key:
                    return None
                if one:  # the common case, in one concatenation
                    body = head + _string(text(*map(str, map(get, names)))) + tail
                else:
                    values = [_string(text(*map(str, map(get, names)))) for text, names in texts]
                    body = "".join(itertools.chain.from_iterable(zip(segments, [*values, ""], strict=True)))
                digest = sha256(f"{prefix}{key}\n{body}".encode()).hexdigest()[:32]
                keys.append(key)
                hashes.append(digest)
                lines.append(f'{{"key":"{digest}","request":{body}}}')
        except KeyError:  # a missing field
            return None
        return keys, hashes, lines

    def _plain_layout(self) -> tuple | None:
        """For render_plain: the key's str.format and field names; the same for each text the
        body holds; and the body (`body`'s output) cut where those texts go, JSON-encoded."""
        spec = self.pipeline.spec
        plain_key = isinstance(self._key, _Fields) and self._key._format is not None
        if spec.embed is not None or self._files or not plain_key:
            return None
        variable = {"contents": ('[{"parts":[{"text":', self._prompt, '}],"role":"user"}]')}
        if self._system is not None:
            variable["systemInstruction"] = ('{"parts":[{"text":', self._system, "}]}")
        texts = []
        fields = []
        for name in sorted([*self._fixed_json, *variable]):
            if name not in variable:
                fields.append(_string(name) + ":" + self._fixed_json[name])
                continue
            before, template, after = variable[name]
            if isinstance(template, _Constant):
                text = _string(template.text)
            elif isinstance(template, _Fields) and template._format is not None:
                texts.append((template._format, template._names))
                text = "\0"  # where the text goes: JSON encodes any NUL it holds
            else:
                return None
            fields.append(_string(name) + ":" + before + text + after)
        segments = ("{" + ",".join(fields) + "}").split("\0")
        pieces = self._key.pieces
        key_field = pieces[0][0] if len(pieces) == 1 and not isinstance(pieces[0], str) else None
        return self._key._format, self._key._names, key_field, texts, segments

    def render(self, records: Iterator[Record], start: int = 0) -> Iterator[Rendered]:
        """Each record as its request; `start` is the position of the first in the source."""
        model = self.pipeline.spec.model
        for position, record in enumerate(records, start):
            if self._key is None:
                key = content_key(record.data)
            else:
                key = self._render(self._key, record, "source.key", f"#{position}").strip()
                if not key:
                    raise SourceError("source.key renders to an empty key", uri=record.uri, line=record.line)
            body = self.body(record, key)
            digest = request_hash(model, key, body)
            line = f'{{"key":"{digest}","request":{body}}}'
            yield Rendered(key=key, hash=digest, line=line, record=record)
