"""Checks of a spec beyond its types: how fields fit together, templates, schemas, files.

Each check returns SpecErrors located in the YAML document, so `validate`
reports every problem at once, each as `file:line:column: field: message`.
No network is used; local sources are peeked at (their first records only).
"""

from __future__ import annotations

import difflib
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes

from ..errors import SourceError, SpecError
from ..output.sinks import output_format
from ..prepare.render import TEMPLATES, is_template
from ..prepare.sources import CsvDialect, infer_format, peek_fields
from . import refusals
from .catalog import load_catalog, shut_down
from .models import URL_SCHEMES, Pipeline
from .yamlsource import Document, Loc, dotted

_OPENAPI_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}


def check(doc: Document, spec: Pipeline, file: Path, backend: str = "gemini") -> list[SpecError]:
    """What the models cannot catch, on the backend the pipeline runs on."""
    errors = [doc.error(loc, message, prefer_key=True) for loc, message in _problems(spec, file, backend)]
    return errors + _templates(doc, spec, file)


def _problems(spec: Pipeline, file: Path, backend: str) -> Iterator[tuple[Loc, str]]:
    base = file.parent
    if spec.request is None and spec.embed is None:
        yield (), "set `request` (generation) or `embed` (embeddings)"
    if spec.request is not None and spec.embed is not None:
        yield ("embed",), "set either `request` or `embed`, not both"
    embedding_model = "embedding" in spec.model
    if spec.embed is not None:
        if not embedding_model:
            yield (
                ("model",),
                f"{spec.model!r} is not an embedding model (e.g. gemini-embedding-001) for `embed`",
            )
        if spec.tools:
            yield ("tools",), "embedding pipelines take no tools"
        if spec.cache is not None:
            yield ("cache",), "embedding pipelines take no cache"
        if spec.batch.inline_below:
            yield ("batch", "inline_below"), "embedding pipelines are always sent as files"
    elif embedding_model:
        yield ("model",), f"{spec.model!r} is an embedding model; use `embed` instead of `request`"
    if gone := shut_down(load_catalog(), spec.model):
        yield ("model",), gone
    if spec.cache is not None and spec.request is not None and spec.request.system is not None:
        yield ("request", "system"), "with a cache, the system instruction goes in cache.system"
    if spec.cache is not None and not (spec.cache.system or spec.cache.contents or spec.cache.files):
        yield ("cache",), "a cache needs system, contents or files"
    if spec.tier != "batch" and spec.embed is not None:
        yield ("tier",), "flex sends generateContent calls: embeddings go by batch (tier: batch)"
    if spec.score is not None:
        if spec.embed is not None:
            yield ("score",), "embeddings have no answer to score"
        try:
            TEMPLATES.parse(spec.score.answer)  # over the output row: its names are known once answered
        except TemplateSyntaxError as exc:
            yield ("score", "answer"), f"template error: {exc.message}"
    if backend == "vertex":
        yield from _vertex_problems(spec)

    for loc, uri in _uris(spec):
        scheme = uri.split("://", 1)[0] if "://" in uri else None
        if scheme is not None and scheme not in URL_SCHEMES:
            yield loc, f"unsupported URL scheme {scheme}://; use a local path, gs:// or s3://"
    if spec.source.uri is not None:
        source_format = spec.source.format or infer_format(spec.source.uri)
        if source_format is None:
            yield ("source", "uri"), "cannot tell the format from the extension; set source.format"
        if spec.source.csv is not None and source_format not in (None, "csv"):
            yield ("source", "csv"), f"csv options given for a {source_format} source"
    if output_format(spec.output.uri, spec.output.format) is None:
        yield (
            ("output", "uri"),
            "cannot tell the format from the extension (.jsonl, .csv, .parquet); set output.format",
        )
    resolved = {
        name: _resolve(base, uri)
        for name, uri in [
            ("source", spec.source.uri),
            ("output", spec.output.uri),
            ("errors", spec.errors.uri),
        ]
        if uri is not None
    }
    if resolved["output"] == resolved.get("source"):
        yield ("output", "uri"), "output would overwrite the source"
    if "errors" in resolved and resolved["errors"] in (resolved["output"], resolved.get("source")):
        yield (
            ("errors", "uri"),
            "errors would overwrite the "
            + ("output" if resolved["errors"] == resolved["output"] else "source"),
        )

    if spec.request is not None and spec.request.generation_config is not None:
        gen = spec.request.generation_config
        loc = ("request", "generation_config")
        if gen.response_schema is not None and gen.response_json_schema is not None:
            yield loc + ("response_json_schema",), "set response_schema or response_json_schema, not both"
        if (gen.response_schema or gen.response_json_schema) and gen.response_mime_type not in (
            "application/json",
            "text/x.enum",
        ):
            yield (
                loc + ("response_mime_type",),
                "a response schema needs response_mime_type: application/json",
            )
        if gen.response_schema is not None:
            for where, message in _openapi_problems(gen.response_schema, ()):
                yield loc + ("response_schema",) + where, message
        if gen.response_json_schema is not None:
            import jsonschema  # here: most specs have no schema, and it is slow to import

            try:
                jsonschema.validators.validator_for(gen.response_json_schema).check_schema(
                    gen.response_json_schema
                )
            except jsonschema.SchemaError as exc:
                yield (
                    loc + ("response_json_schema",) + tuple(exc.path),
                    f"not a valid JSON Schema: {exc.message}",
                )
    for n, tool in enumerate(spec.tools):
        for m, fn in enumerate(getattr(tool, "functions", [])):
            if fn.parameters is not None:
                import jsonschema

                try:
                    jsonschema.Draft202012Validator.check_schema(fn.parameters)
                except jsonschema.SchemaError as exc:
                    yield (
                        ("tools", n, "functions", m, "parameters"),
                        f"not a valid JSON Schema: {exc.message}",
                    )
    for loc, path in _local_files(spec):
        if not (base / path).is_file():
            yield loc, f"file not found: {path}"
        elif refused := refusals.mime_type(mimetypes.guess_type(path)[0] or "application/octet-stream"):
            yield loc, f"{path}: the service would refuse this file: {refused}"
    yield from _refused(spec)


def _refused(spec: Pipeline) -> Iterator[tuple[Loc, str]]:
    """Settings the service refuses (refusals.py), found before anything is uploaded."""
    found = load_catalog().answering(spec.model)
    gen = spec.request.generation_config if spec.request is not None else None
    loc = ("request", "generation_config")
    if found is not None and gen is not None:
        model = found[1]
        if refused := refusals.max_output_tokens(model, gen.max_output_tokens):
            yield loc + ("max_output_tokens",), _said(refused)
        thinking = gen.thinking_config
        if thinking is not None and (
            refused := refusals.thinking(model, thinking.thinking_level, thinking.thinking_budget)
        ):
            field = "thinking_level" if thinking.thinking_level is not None else "thinking_budget"
            yield loc + ("thinking_config", field), _said(refused)
    if gen is not None and gen.response_schema is not None:
        for path, refused in refusals.schema_enums(gen.response_schema, "generation_config.response_schema"):
            yield loc + ("response_schema",) + path, _said(refused)
    for n, tool in enumerate(spec.tools):
        for m, fn in enumerate(getattr(tool, "functions", [])):
            if fn.parameters is not None:
                where = f"tools[{n}].function_declarations[{m}]"
                for path, refused in refusals.function_parameters(fn.parameters, where):
                    yield ("tools", n, "functions", m, "parameters") + path, _said(refused)


def _said(refusal: str) -> str:
    """A refusal as one line: the service's validator messages come as `* field: problem\n`."""
    return "the service would refuse this: " + refusal.strip().removeprefix("* ")


def _vertex_problems(spec: Pipeline) -> Iterator[tuple[Loc, str]]:
    """What Vertex AI batch prediction cannot do (docs/vertex.md)."""
    if spec.cache is not None:
        yield (
            ("cache",),
            (
                "the vertex backend takes no context cache in batch prediction: move cache.system to "
                "request.system and cache.files to request.files (Vertex caches repeated prefixes "
                "implicitly)"
            ),
        )
    if spec.batch.max_requests > 200_000:
        yield ("batch", "max_requests"), "Vertex AI takes at most 200,000 requests a job"
    if spec.batch.max_bytes > 1_000_000_000:
        yield ("batch", "max_bytes"), "Vertex AI takes at most 1 GB of input a job"
    if spec.batch.staging is not None and not spec.batch.staging.startswith("gs://"):
        yield ("batch", "staging"), "the staging prefix must be a gs:// URL"
    for i, ref in enumerate(spec.request.files if spec.request else []):
        if ref.startswith("files/"):
            yield (
                ("request", "files", i),
                "Files API names do not exist on Vertex AI; name a local or gs:// file",
            )


def _resolve(base: Path, uri: str) -> str:
    return uri if "://" in uri else str((base / uri).resolve())


def _uris(spec: Pipeline) -> Iterator[tuple[Loc, str]]:
    if spec.source.uri is not None:
        yield ("source", "uri"), spec.source.uri
    yield ("output", "uri"), spec.output.uri
    if spec.errors.uri:
        yield ("errors", "uri"), spec.errors.uri
    if spec.state:
        yield ("state",), spec.state


def _local_files(spec: Pipeline) -> Iterator[tuple[Loc, str]]:
    """Files named literally (not by a template) that must exist next to the spec."""
    named = [(("cache", "files", i), f) for i, f in enumerate(spec.cache.files)] if spec.cache else []
    if spec.request is not None:
        named += [(("request", "files", i), f) for i, f in enumerate(spec.request.files)]
    for loc, path in named:
        if not is_template(path) and "://" not in path and not path.startswith("files/"):
            yield loc, path


def _openapi_problems(schema: Any, where: Loc) -> Iterator[tuple[Loc, str]]:
    """The OpenAPI subset Gemini's response_schema accepts."""
    if not isinstance(schema, dict):
        yield where, "a schema must be a mapping"
        return
    kind = schema.get("type")
    if kind is None and not schema.get("anyOf"):
        yield where, "schema has no type"
    elif kind is not None and (not isinstance(kind, str) or kind.upper() not in _OPENAPI_TYPES):
        close = difflib.get_close_matches(str(kind).upper(), sorted(_OPENAPI_TYPES), n=1)
        hint = f"; did you mean {close[0]}?" if close else f" (one of {', '.join(sorted(_OPENAPI_TYPES))})"
        yield where + ("type",), f"unknown type {kind!r}{hint}"
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        yield where + ("properties",), "properties must be a mapping of schemas"
        props = {}
    for name, sub in props.items():
        yield from _openapi_problems(sub, where + ("properties", name))
    for name in schema.get("required", []) or []:
        if name not in props:
            yield where + ("required",), f"required property {name!r} is not in properties"
    if "items" in schema:
        yield from _openapi_problems(schema["items"], where + ("items",))
    elif isinstance(kind, str) and kind.upper() == "ARRAY":
        yield where, "an ARRAY schema needs items"
    for i, sub in enumerate(schema.get("anyOf", []) or []):
        yield from _openapi_problems(sub, where + ("anyOf", i))
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        yield where + ("enum",), "enum must be a non-empty list"


def template_fields(spec: Pipeline) -> Iterator[tuple[Loc, str | None]]:
    """Every template in the spec, with where it is."""
    yield ("source", "key"), spec.source.key_template
    if spec.request is not None:
        yield ("request", "system"), spec.request.system
        yield ("request", "prompt"), spec.request.prompt
        for i, f in enumerate(spec.request.files):
            yield ("request", "files", i), f
    if spec.embed is not None:
        yield ("embed", "content"), spec.embed.content
        yield ("embed", "title"), spec.embed.title
    if spec.score is not None and spec.source.uri is not None:  # over the record; a judge's is its own
        yield ("score", "expected"), spec.score.expected


def _templates(doc: Document, spec: Pipeline, file: Path) -> list[SpecError]:
    errors: list[SpecError] = []
    used: dict[str, Loc] = {}
    for loc, text in template_fields(spec):
        if text is None:
            continue
        try:
            ast = TEMPLATES.parse(text)
        except TemplateSyntaxError as exc:
            mark = doc.text_mark(loc, exc.lineno or 1)
            errors.append(
                SpecError(
                    f"template error: {exc.message}",
                    file=doc.file,
                    line=mark.line if mark else None,
                    column=mark.column if mark else None,
                    field=dotted(loc),
                )
            )
            continue
        optional = _optional_names(ast)
        for name in sorted(meta.find_undeclared_variables(ast) - optional):
            used.setdefault(name, loc)
    columns: list[tuple[Loc, str]] = [
        (("output", "columns", i), c) for i, c in enumerate(spec.output.columns)
    ]
    if spec.source.csv:  # a typed column that is not in the file is a typo
        columns += [(("source", "csv", "types", c), c) for c in spec.source.csv.types]
    uri = spec.source.uri
    if uri is None:
        return errors  # another pipeline's rows: their fields are known once it has answered
    if "://" in uri:
        return errors  # remote: no network in validate
    if any(ch in uri for ch in "*?["):
        if not any(file.parent.glob(uri)):
            errors.append(doc.error(("source", "uri"), f"no file matches {uri}"))
        return errors  # many files: not cheap to peek
    path = file.parent / uri
    if not path.is_file():
        errors.append(doc.error(("source", "uri"), f"file not found: {uri}"))
        return errors
    if not used and not columns:
        return errors
    csv = spec.source.csv
    try:
        fields = peek_fields(str(path), spec.source.format, CsvDialect(**csv.model_dump()) if csv else None)
    except SourceError as exc:
        errors.append(doc.error(("source", "uri"), f"cannot read source: {exc}"))
        return errors
    if not fields:
        return errors
    for name, loc in used.items():
        if name not in fields:
            errors.append(doc.error(loc, _missing(name, fields, uri)))
    for loc, column in columns:
        if column not in fields:
            errors.append(doc.error(loc, _missing(column, fields, uri)))
    return errors


def _missing(name: str, fields: set[str], uri: str) -> str:
    close = difflib.get_close_matches(name, sorted(fields), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (fields: {', '.join(sorted(fields)[:12])})"
    return f"field {name!r} is not in the source {uri}{hint}"


def _optional_names(ast: nodes.Template) -> set[str]:
    """Names the template guards itself (`x | default(...)`, `x is defined`): absent is fine."""
    names = set()
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        if node.name in ("default", "d", "defined", "undefined") and isinstance(node.node, nodes.Name):
            names.add(node.node.name)
    return names
