"""Deterministic model answers: the same request always gets the same response.

Text is derived from the prompt; with a response schema the text is JSON that
satisfies it; token counts follow from the sizes of request and response.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

from ..spec import refusals
from ..spec.tokens import CHARS_PER_TOKEN, PART_TOKENS, media_tokens
from . import models
from .errors import ApiError


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def _texts(content: Any) -> list[str]:
    if not isinstance(content, dict):
        return []
    return [
        p["text"]
        for p in content.get("parts") or []
        if isinstance(p, dict) and isinstance(p.get("text"), str)
    ]


# A part that is not text (an image, a file) counts as a fixed number of tokens, as images do on
# the service, unless `part_tokens` knows better (the store counts uploaded files by their content).
PartTokens = Callable[[dict[str, Any]], int]


def _part_tokens(part: dict[str, Any]) -> int:
    data = part.get("inlineData") or part.get("inline_data")
    if not isinstance(data, dict):
        return PART_TOKENS
    mime = str(data.get("mimeType") or data.get("mime_type") or "")
    if mime.startswith("text/"):
        # Text sent inline counts by its content, as text does (base64: 3 bytes in 4 characters).
        return math.ceil(len(str(data.get("data") or "")) * 3 / 4 / CHARS_PER_TOKEN)
    # Either base64 alphabet: the SDK sends the URL-safe one, REST examples the standard one.
    text = str(data.get("data") or "").translate(str.maketrans("+/", "-_"))
    try:
        blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return PART_TOKENS
    return media_tokens(mime, blob[: 1 << 16], lambda: blob)


_MODALITIES = {"image": "IMAGE", "audio": "AUDIO", "video": "VIDEO", "application/pdf": "DOCUMENT"}


def modality(part: dict[str, Any]) -> str:
    """The modality the service reports a part under, from its MIME type."""
    data = part.get("inlineData") or part.get("inline_data") or part.get("fileData") or part.get("file_data")
    mime = str((data or {}).get("mimeType") or (data or {}).get("mime_type") or "")
    return _MODALITIES.get(mime, _MODALITIES.get(mime.split("/")[0], "TEXT"))


def prompt_details(request: dict[str, Any], part_tokens: PartTokens = _part_tokens) -> dict[str, int]:
    """Input tokens by modality (system instruction included)."""
    counts: dict[str, int] = {}
    for content in [request.get("systemInstruction"), *(request.get("contents") or [])]:
        if not isinstance(content, dict):
            continue
        for part in content.get("parts") or []:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    kind, n = "TEXT", tokens(part["text"])
                else:
                    kind, n = modality(part), part_tokens(part)
                counts[kind] = counts.get(kind, 0) + n
    return counts


def prompt_tokens(request: dict[str, Any], part_tokens: PartTokens = _part_tokens) -> int:
    return sum(prompt_details(request, part_tokens).values())


def details(counts: dict[str, int]) -> list[dict[str, Any]]:
    """`promptTokensDetails` and its kin: one entry per modality, zero counts left out."""
    return [{"modality": kind, "tokenCount": n} for kind, n in counts.items() if n]


def _camel(name: str) -> str:
    """A proto field name in the JSON spelling: `tool_config` -> `toolConfig`."""
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


# GenerateContentRequest's fields, in either JSON spelling the service reads (proto names too).
def _spellings(*names: str) -> frozenset[str]:
    return frozenset(spelling for name in names for spelling in (name, _camel(name)))


_REQUEST_FIELDS = _spellings(
    "model",
    "contents",
    "tools",
    "tool_config",
    "safety_settings",
    "system_instruction",
    "generation_config",
    "cached_content",
    "labels",
)
# The Developer API's own (google-genai: models.py writes them at the top level), and Vertex's.
_DEVELOPER_FIELDS = _spellings("service_tier", "store", "continuation_token")
_VERTEX_FIELDS = _spellings("model_armor_config")
SERVICE_TIERS = ("unspecified", "flex", "standard", "priority")


def service_tier(request: dict[str, Any]) -> str:
    """The tier a request asks for (any case); standard when it names none."""
    tier = str(request.get("serviceTier") or request.get("service_tier") or "standard").lower()
    return "standard" if tier == "unspecified" else tier


def validate_request(request: Any, *, vertex: bool = False) -> None:
    """What the service checks before it runs a GenerateContentRequest."""
    if not isinstance(request, dict):
        raise ApiError(400, "request must be a JSON object")
    known = _REQUEST_FIELDS | (_VERTEX_FIELDS if vertex else _DEVELOPER_FIELDS)
    for name in request:
        if name not in known:
            raise ApiError(400, f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')
    tier = request.get("serviceTier", request.get("service_tier"))
    if tier is not None and str(tier).lower() not in SERVICE_TIERS:
        enum = "type.googleapis.com/google.ai.generativelanguage.v1beta.ServiceTier"
        raise ApiError(400, f"Invalid value at 'service_tier' ({enum}), \"{tier}\"")
    config = request.get("generationConfig") or {}
    if config.get("responseMimeType") == "text/x.enum":
        schema = config.get("responseSchema") or config.get("responseJsonSchema") or {}
        if not (isinstance(schema, dict) and isinstance(schema.get("enum"), list) and schema["enum"]):
            field = "GenerateContentRequest.generation_config.response_schema"
            raise ApiError(400, f"* {field}: text/x.enum needs an enum schema\n")
    declared = any(
        t.get("functionDeclarations") or t.get("function_declarations")
        for t in request.get("tools") or []
        if isinstance(t, dict)
    )
    if declared and config.get("responseMimeType") == "application/json":
        raise ApiError(400, "Function calling with a response mime type: 'application/json' is unsupported")
    for i, tool in enumerate(request.get("tools") or []):
        declarations = (tool.get("functionDeclarations") or []) if isinstance(tool, dict) else []
        for j, declaration in enumerate(declarations):
            if isinstance(declaration, dict) and "parameters" in declaration:
                where = f"tools[{i}].function_declarations[{j}]"
                for _, message in refusals.function_parameters(declaration["parameters"], where):
                    raise ApiError(400, message)
    for _, message in refusals.schema_enums(
        config.get("responseSchema"), "generation_config.response_schema"
    ):
        raise ApiError(400, message)
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if (
            not isinstance(content, dict)
            or not isinstance(content.get("parts"), list)
            or not content["parts"]
        ):
            raise ApiError(
                400,
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.",
            )
        for j, part in enumerate(content["parts"]):
            _check_part(part, f"contents[{i}].parts[{j}]", vertex)


def _check_part(part: Any, where: str, vertex: bool = False) -> None:
    """A part the service would refuse: empty, an inline blob of a refused type or without data,
    a file that is not a Files API file (the Developer API reads no gs:// or web URLs)."""
    if not isinstance(part, dict) or not any(v not in (None, "", {}) for v in part.values()):
        oneof = "required oneof field 'data' must have one initialized field"
        raise ApiError(400, f"* GenerateContentRequest.{where}.data: {oneof}\n")
    inline = part.get("inlineData") or part.get("inline_data")
    if isinstance(inline, dict):
        mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
        if not inline.get("data"):
            raise ApiError(400, f"* GenerateContentRequest.{where}.inline_data.data: inline data is empty\n")
        if refused := refusals.mime_type(mime):
            raise ApiError(400, refused)
    data = part.get("fileData") or part.get("file_data")
    if isinstance(data, dict):
        uri = str(data.get("fileUri") or data.get("file_uri") or "")
        # Vertex reads Cloud Storage; the Developer API only its own Files API.
        if not (vertex and uri.startswith("gs://")) and "/files/" not in uri and not uri.startswith("files/"):
            raise ApiError(400, f"Invalid or unsupported file uri: {uri}")


def min_cache_tokens(model: str) -> int:
    """Smallest content a context cache accepts (larger for Pro models)."""
    found = models.find(model)
    return (found[1].min_cache_tokens if found else None) or 1024


def stream_chunks(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A response as streamGenerateContent sends it: the text in a few deltas, usage with the
    prompt count on every chunk and the final counts, with the finish reason, on the last."""
    usage = response["usageMetadata"]
    head = {k: v for k, v in response.items() if k in ("modelVersion", "responseId")}
    early = {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]}
    if "candidates" not in response:  # a blocked prompt: one chunk, its feedback
        return [response]
    candidate = response["candidates"][0]
    parts = (candidate.get("content") or {}).get("parts") or []
    pieces: list[list[dict[str, Any]]] = []
    for part in parts:
        text = part.get("text")
        if text is None or part.get("thought"):
            pieces.append([part])
            continue
        words = text.split(" ")
        third = max(1, len(words) // 3)
        for i in range(0, len(words), third):
            chunk = " ".join(words[i : i + third]) + (" " if i + third < len(words) else "")
            pieces.append([{"text": chunk}])
    chunks = [
        {
            "candidates": [{"content": {"parts": p, "role": "model"}, "index": 0}],
            "usageMetadata": early,
            **head,
        }
        for p in pieces[:-1]
    ]
    last = {**candidate, "content": {"parts": pieces[-1] if pieces else [{"text": ""}], "role": "model"}}
    chunks.append({"candidates": [last], "usageMetadata": usage, **head})
    return chunks


def generate(
    model: str,
    request: dict[str, Any],
    cached_tokens: int = 0,
    part_tokens: PartTokens = _part_tokens,
    *,
    vertex: bool = False,
    file_content: Callable[[str], str] = str,
) -> dict[str, Any]:
    """A GenerateContentResponse for `request`; `cached_tokens` come from its cachedContent.
    The answer follows what the model is shown: a file by its content (`file_content` gives a
    digest of it from its URI), not by where it is stored."""
    validate_request(request, vertex=vertex)
    prompt = "\n".join(t for c in request["contents"] for t in _texts(c))
    # Labels are for billing reports; they change nothing in an answer (and the Vertex backend
    # adds one to carry each request's hash). Nor does the tier that serves a request.
    asked = {k: v for k, v in request.items() if k not in ("labels", "serviceTier", "service_tier")}
    asked["contents"] = [
        {
            **content,
            "parts": [
                {"file": file_content(uri)} if (uri := _file_uri(part)) else part
                for part in content.get("parts") or []
            ],
        }
        for content in request["contents"]
    ]
    seed = hashlib.sha256(json.dumps([model, _canonical(asked)], sort_keys=True).encode()).hexdigest()
    config = request.get("generationConfig") or {}
    count = config.get("candidateCount", 1)
    if not isinstance(count, int) or count < 1:
        raise ApiError(400, "* GenerateContentRequest.generation_config.candidate_count: must be positive")
    # The SDK passes thinkingConfig through as its own model dumps it: snake_case keys.
    thinking = config.get("thinkingConfig") or config.get("thinking_config") or {}
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget", -1))
    thoughts = bool(thinking.get("includeThoughts") or thinking.get("include_thoughts")) and budget != 0
    tools = [t for t in request.get("tools") or [] if isinstance(t, dict)]
    call = _function_call(request, tools, prompt, seed)
    candidates, output_count, thought_count = [], 0, 0
    for index in range(count):
        s = seed if index == 0 else hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()
        parts: list[dict[str, Any]] = []
        finish = "STOP"
        if thoughts:
            thought = f"Thinking about the request ({s[:8]}): {' '.join(prompt.split()[:12])}"
            if budget and budget > 0:
                thought = thought[: budget * CHARS_PER_TOKEN]
            parts.append({"text": thought, "thought": True})
            thought_count += tokens(thought)
        if call is not None:
            parts.append({"functionCall": call})
            output_count += tokens(json.dumps(call))
        else:
            text, finish = _text(prompt, s, config)
            parts.append({"text": text})
            output_count += tokens(text)
        candidate: dict[str, Any] = {
            "content": {"parts": parts, "role": "model"},
            "finishReason": finish,
            "index": index,
        }
        if any("googleSearch" in t or "google_search" in t for t in tools):
            candidate["groundingMetadata"] = _grounding(prompt, s)
        candidates.append(candidate)
    prompt_counts = prompt_details(request, part_tokens)
    prompt_count = sum(prompt_counts.values()) + cached_tokens
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_count,
        "candidatesTokenCount": output_count,
        "totalTokenCount": prompt_count + output_count + thought_count,
    }
    if cached_tokens:  # cached tokens are text here (the cache's content), counted in the prompt too
        prompt_counts["TEXT"] = prompt_counts.get("TEXT", 0) + cached_tokens
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached_tokens}]
    usage["promptTokensDetails"] = details(prompt_counts)
    usage["candidatesTokensDetails"] = details({"TEXT": output_count})
    if thought_count:
        usage["thoughtsTokenCount"] = thought_count
    if cached_tokens:
        usage["cachedContentTokenCount"] = cached_tokens
    return {
        "candidates": candidates,
        "usageMetadata": usage,
        "modelVersion": model.removeprefix("models/"),
        "responseId": seed[:22],
    }


def _text(prompt: str, seed: str, config: dict[str, Any]) -> tuple[str, str]:
    """The answer's text and finish reason."""
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if config.get("responseMimeType") == "text/x.enum":
        return str(fake_value(schema, seed)), "STOP"  # validate_request saw to an enum schema
    if config.get("responseMimeType") == "application/json":
        value = fake_value(schema, seed) if schema else {"answer": _reply(prompt, seed)}
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = _reply(prompt, seed)
    limit = config.get("maxOutputTokens")
    if isinstance(limit, int) and tokens(text) > limit:
        return text[: limit * CHARS_PER_TOKEN], "MAX_TOKENS"
    return text, "STOP"


def _function_call(
    request: dict[str, Any], tools: list[dict[str, Any]], prompt: str, seed: str
) -> dict[str, Any] | None:
    """The call the model asks for, if any. Mode ANY always calls (an allowed function); AUTO
    (the default) calls a declared function whose name the prompt mentions (`get_weather` or
    "get weather"); NONE never. After a functionResponse the model answers in text."""
    declarations = [
        d
        for t in tools
        for d in t.get("functionDeclarations") or t.get("function_declarations") or []
        if isinstance(d, dict) and d.get("name")
    ]
    last = request["contents"][-1] if request["contents"] else {}
    if not declarations or any(
        "functionResponse" in p or "function_response" in p
        for p in last.get("parts") or []
        if isinstance(p, dict)
    ):
        return None
    config = (request.get("toolConfig") or request.get("tool_config") or {}).get(
        "functionCallingConfig"
    ) or {}
    mode = str(config.get("mode") or "AUTO").upper()
    allowed = config.get("allowedFunctionNames") or config.get("allowed_function_names")
    if mode == "NONE":
        return None
    choices = [d for d in declarations if not allowed or d["name"] in allowed]
    lowered = prompt.lower()
    mentioned = [
        d for d in choices if d["name"].lower() in lowered or d["name"].lower().replace("_", " ") in lowered
    ]
    found = mentioned or (choices if mode == "ANY" else [])
    if not found:
        return None
    chosen = found[0]
    schema = (
        chosen.get("parameters") or chosen.get("parametersJsonSchema") or chosen.get("parameters_json_schema")
    )
    return {"name": chosen["name"], "args": fake_value(schema, seed) if schema else {}}


def _grounding(prompt: str, seed: str) -> dict[str, Any]:
    """How the service shows that google_search was used; example.com sources."""
    query = " ".join(prompt.split()[:8])
    return {
        "webSearchQueries": [query],
        "groundingChunks": [
            {"web": {"uri": f"https://example.com/search/{seed[:12]}", "title": "example.com"}}
        ],
        "searchEntryPoint": {"renderedContent": f"<div>{query}</div>"},
    }


EMBEDDING_SIZE = 3072  # gemini-embedding-001's default dimensionality


def embed(request: Any) -> dict[str, Any]:
    """An EmbedContentResponse: a deterministic unit vector of the asked size. Vertex batch lines
    carry the options in `embed_content_config`, the Developer API's beside `content`."""
    if not isinstance(request, dict) or not isinstance(request.get("content"), dict):
        raise ApiError(400, "* EmbedContentRequest.content: content is not specified")
    options = {**request, **(request.get("embed_content_config") or request.get("embedContentConfig") or {})}
    size = options.get("outputDimensionality") or options.get("output_dimensionality") or EMBEDDING_SIZE
    if not isinstance(size, int) or not 1 <= size <= EMBEDDING_SIZE:
        raise ApiError(400, f"outputDimensionality must be between 1 and {EMBEDDING_SIZE}")
    text = "\n".join(_texts(request["content"]))
    stream = b""
    counter = 0
    while len(stream) < size * 4:
        stream += hashlib.sha256(f"{text}:{counter}".encode()).digest()
        counter += 1
    values = [int.from_bytes(stream[i * 4 : i * 4 + 4], "big") / 2**31 - 1 for i in range(size)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return {"embedding": {"values": [round(v / norm, 6) for v in values]}}


PREDICT_EMBEDDING_SIZE = 768  # text-embedding-005's dimensionality


def predict_embeddings(body: Any) -> dict[str, Any]:
    """Vertex's `:predict` for its text embedding models: `{"instances": [{"content", "title",
    "task_type"}], "parameters": {"outputDimensionality", "autoTruncate"}}` ->
    `{"predictions": [{"embeddings": {"values", "statistics": {"token_count", "truncated"}}}]}`."""
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or not instances:
        raise ApiError(400, "instances is required")
    size = (body.get("parameters") or {}).get("outputDimensionality") or PREDICT_EMBEDDING_SIZE
    predictions = []
    for instance in instances:
        text = str((instance or {}).get("content") or "") if isinstance(instance, dict) else ""
        vector = embed({"content": {"parts": [{"text": text}]}, "outputDimensionality": size})["embedding"]
        statistics = {"token_count": tokens(text), "truncated": False}
        predictions.append({"embeddings": {"values": vector["values"], "statistics": statistics}})
    characters = sum(len(str(i.get("content") or "")) for i in instances if isinstance(i, dict))
    return {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}


def _canonical(value: Any) -> Any:
    """A request as asked, not as spelled: the SDK's inline requests add empty fields, write
    schema types in capitals and some fields in snake_case (thinking_config), which must not
    change the answer."""
    if isinstance(value, dict):
        out = {_camel(k): _canonical(v) for k, v in value.items() if v not in ({}, [], None)}
        if isinstance(out.get("type"), str):
            out["type"] = out["type"].lower()
        return out
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _file_uri(part: Any) -> str | None:
    data = (part.get("fileData") or part.get("file_data")) if isinstance(part, dict) else None
    return (data.get("fileUri") or data.get("file_uri")) if isinstance(data, dict) else None


def _reply(prompt: str, seed: str) -> str:
    words = prompt.split()
    head = " ".join(words[:24]) + (" ..." if len(words) > 24 else "")
    return f"Emulated reply {seed[:8]} to a {len(words)}-word prompt: {head}"


def camel_schema(schema: Any) -> Any:
    """A schema with its keywords in camelCase: the SDK sends some in snake_case (`any_of`,
    `property_ordering`, `max_items`...). Property names and enum values stay as they are."""
    if isinstance(schema, list):
        return [camel_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        name = _camel(key)
        if name in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[name] = {k: camel_schema(v) for k, v in value.items()}
        elif name in ("enum", "required", "propertyOrdering", "const", "default", "example"):
            out[name] = value
        else:
            out[name] = camel_schema(value)
    return out


def fake_value(schema: Any, seed: str, path: str = "$", root: Any = None) -> Any:
    """A value that satisfies `schema` (OpenAPI-style responseSchema or JSON Schema)."""
    if root is None:
        schema = root = camel_schema(schema)
    if not isinstance(schema, dict):
        return _pick_word(seed, path)
    if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return fake_value(target, seed, path, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        options = schema["enum"]
        return options[_n(seed, path) % len(options)]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            options = [s for s in schema[combinator] if not (isinstance(s, dict) and _type(s) == "null")]
            return fake_value((options or schema[combinator])[0], seed, path, root)
    kind = _type(schema)
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        order = list(schema.get("propertyOrdering") or []) + [
            k for k in props if k not in (schema.get("propertyOrdering") or [])
        ]
        return {k: fake_value(props[k], seed, f"{path}.{k}", root) for k in order if k in props}
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = int(schema.get("maxItems", max(low, 3)))
        count = max(low, min(high, 1 + _n(seed, path) % 3))
        return [fake_value(schema.get("items") or {}, seed, f"{path}[{i}]", root) for i in range(count)]
    if kind == "integer":
        return int(_number(schema, seed, path, integer=True))
    if kind == "number":
        return _number(schema, seed, path, integer=False)
    if kind == "boolean":
        return _n(seed, path) % 2 == 0
    if kind == "null":
        return None
    return _string(schema, seed, path)


def _type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), kind[0] if kind else None)
    return str(kind).lower() if kind else None


def _n(seed: str, path: str) -> int:
    return int(hashlib.sha256(f"{seed}{path}".encode()).hexdigest()[:8], 16)


_WORDS = [
    "amber",
    "birch",
    "cobalt",
    "delta",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "indigo",
    "juniper",
]


def _pick_word(seed: str, path: str) -> str:
    return _WORDS[_n(seed, path) % len(_WORDS)]


def _number(schema: dict[str, Any], seed: str, path: str, *, integer: bool) -> float:
    low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
    high = schema.get("maximum", schema.get("exclusiveMaximum", low + 100))
    if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
        low += 1 if integer else 1e-6
    if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
        high -= 1 if integer else 1e-6
    if integer:
        low, high = math.ceil(low), math.floor(high)
        return low + _n(seed, path) % (high - low + 1) if high >= low else low
    return round(low + (high - low) * (_n(seed, path) % 1000) / 1000, 3)


def _string(schema: dict[str, Any], seed: str, path: str) -> str:
    fmt = schema.get("format")
    day = 1 + _n(seed, path) % 28
    if fmt == "date-time":
        return f"2025-01-{day:02d}T12:00:00Z"
    if fmt == "date":
        return f"2025-01-{day:02d}"
    value = _pick_word(seed, path)
    low = int(schema.get("minLength", 0))
    while len(value) < low:
        value += "-" + _pick_word(seed, path + value)
    high = schema.get("maxLength")
    return value[: int(high)] if high is not None else value
