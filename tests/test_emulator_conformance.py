"""The emulator answers and refuses as the service does, through the unmodified SDK and plain
HTTP. Expected shapes and wording come from docs/protocol.md and the
sources it names, and the google-genai source."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from conftest import write
from google import genai
from google.genai import errors, types

MODEL = "gemini-3.8-flash"


def test_models_list_and_get(client):
    """Model limits and methods (models.get / models.list)."""
    listed = {m.name: m for m in client.models.list()}
    flash = listed["models/gemini-3.8-flash"]
    assert flash.input_token_limit == 1_048_576 and flash.output_token_limit == 65_536
    assert "batchGenerateContent" in flash.supported_actions
    assert "embedContent" in listed["models/gemini-embedding-001"].supported_actions
    assert client.models.get(model="gemini-4-argon").display_name == "Gemini 4 Argon"
    assert "models/gemini-2.0-flash" not in listed  # shut down
    with pytest.raises(errors.ClientError) as missing:
        client.models.get(model="gemini-2.5-flsh")
    assert missing.value.code == 404


@pytest.mark.parametrize("model", ["gemini-2.5-flsh", "gpt-4o"])
def test_unknown_models_are_not_found(client, model):
    """Refusals: unknown model, generateContent and batch create (the message names the method)."""
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(model=model, contents="hi")
    assert refused.value.code == 404
    assert f"models/{model} is not found for API version v1beta" in refused.value.message or (
        f"models/{model} is not found for API version v1," in refused.value.message
    )
    assert "not supported for generateContent" in refused.value.message
    with pytest.raises(errors.ClientError) as batch:
        client.batches.create(model=model, src=[{"contents": [{"parts": [{"text": "x"}]}]}])
    assert batch.value.code == 404 and "batchGenerateContent" in batch.value.message


def test_dated_versions_of_a_model_are_served(client):
    assert client.models.generate_content(model="gemini-2.5-flash-001", contents="hi").text


def test_streaming_gives_the_same_answer_in_pieces(client):
    """Streaming: text deltas, usage on every chunk, final counts and finish reason on the last."""
    whole = client.models.generate_content(model=MODEL, contents="Tell me about the sea and the sky")
    chunks = list(
        client.models.generate_content_stream(model=MODEL, contents="Tell me about the sea and the sky")
    )
    assert len(chunks) > 1
    assert "".join(c.text or "" for c in chunks) == whole.text
    assert all(c.usage_metadata.prompt_token_count == whole.usage_metadata.prompt_token_count for c in chunks)
    assert chunks[-1].candidates[0].finish_reason == "STOP"
    assert chunks[-1].usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count
    assert chunks[0].usage_metadata.candidates_token_count is None


def test_async_client_streams_too(client):
    async def stream() -> list[str]:
        chunks = await client.aio.models.generate_content_stream(model=MODEL, contents="Say something")
        return [c.text async for c in chunks]

    assert "".join(asyncio.run(stream())).startswith("Emulated reply")


@pytest.mark.parametrize("value", [0, 65_537])
def test_max_output_tokens_out_of_range(client, value):
    """Model limits: maxOutputTokens must lie in [1, outputTokenLimit]."""
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(
            model=MODEL, contents="x", config=types.GenerateContentConfig(max_output_tokens=value)
        )
    assert refused.value.code == 400
    assert f"maxOutputTokens value of {value} but the supported range is from 1 (inclusive) to 65537" in (
        refused.value.message
    )


def test_enum_answers(client):
    """responseMimeType text/x.enum: the answer is one of the values; without an enum, a 400."""
    answer = client.models.generate_content(
        model=MODEL,
        contents="Which?",
        config=types.GenerateContentConfig(
            response_mime_type="text/x.enum", response_schema={"type": "STRING", "enum": ["red", "blue"]}
        ),
    )
    assert answer.text in ("red", "blue")
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(
            model=MODEL, contents="x", config=types.GenerateContentConfig(response_mime_type="text/x.enum")
        )
    assert refused.value.code == 400


def test_function_calling_with_json_output_is_refused(client):
    """Refusals: function calling + application/json on 2.x."""
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="f")])
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(
            model=MODEL,
            contents="x",
            config=types.GenerateContentConfig(tools=[tool], response_mime_type="application/json"),
        )
    assert (
        "Function calling with a response mime type: 'application/json' is unsupported"
        in refused.value.message
    )


@pytest.mark.parametrize(
    "parameters, said",
    [
        (
            {"type": "OBJECT", "properties": {}},
            "* GenerateContentRequest.tools[0].function_declarations[0].parameters.properties: "
            "should be non-empty for OBJECT type\n",
        ),
        (
            {"type": "OBJECT", "properties": {"stars": {"type": "INTEGER", "enum": ["1", "2"]}}},
            "* GenerateContentRequest.tools[0].function_declarations[0].parameters.properties[stars].enum: "
            "only allowed for STRING type\n",
        ),
    ],
)
def test_function_parameters_the_service_refuses(client, parameters, said):
    """Refusals: bad tool schemas, in the service's words (the same rules validate applies)."""
    tool = {"function_declarations": [{"name": "f", "parameters": parameters}]}
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(model=MODEL, contents="x", config={"tools": [tool]})
    assert refused.value.code == 400 and refused.value.message == said


def test_usage_details_by_modality(client):
    """usageMetadata: promptTokensDetails and candidatesTokensDetails per modality."""
    image = types.Part.from_bytes(data=b"\x89PNG....", mime_type="image/png")
    answer = client.models.generate_content(model=MODEL, contents=[image, "Describe it"])
    usage = answer.usage_metadata
    prompt = {d.modality.value: d.token_count for d in usage.prompt_tokens_details}
    assert prompt == {"IMAGE": 258, "TEXT": 3}
    assert usage.prompt_token_count == 261
    assert usage.candidates_tokens_details[0].token_count == usage.candidates_token_count


def test_text_sent_inline_counts_by_its_content(client, emulator):
    """Tokens per modality: text/* inline data is counted as text; a long document makes a cache."""
    document = ("word " * 60_000).encode()
    part = types.Part.from_bytes(data=document, mime_type="text/plain")
    counted = client.models.count_tokens(model=MODEL, contents=[part])
    assert counted.total_tokens == len(document) // 4
    cache = client.caches.create(model=MODEL, config=types.CreateCachedContentConfig(contents=[part]))
    assert cache.usage_metadata.total_token_count == len(document) // 4
    # countTokens honours cachedContent (plain HTTP: the SDK sends contents only in Developer mode).
    body = {"contents": [{"parts": [{"text": "and a question"}]}], "cachedContent": cache.name}
    answer = _http(
        f"{emulator.url}/v1beta/models/{MODEL}:countTokens",
        {"generateContentRequest": {**body, "model": f"models/{MODEL}"}},
    )
    assert answer["cachedContentTokenCount"] == len(document) // 4
    assert answer["totalTokens"] == len(document) // 4 + 4


def test_v1alpha_is_served(emulator):
    assert _http(f"{emulator.url}/v1alpha/models/{MODEL}")["name"] == f"models/{MODEL}"


def _http(url: str, body: dict | None = None) -> dict:
    """Plain HTTP, as curl would send it."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"x-goog-api-key": "k", "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_validate_warns_about_a_model_it_does_not_know(cli, tmp_path):
    from conftest import write

    write(tmp_path / "data.jsonl", '{"q": "hi"}\n')
    spec = """
        version: 1
        name: p
        model: MODEL
        source: {uri: data.jsonl}
        request: {prompt: "{{ q }}"}
        output: {uri: out.jsonl}
    """
    write(tmp_path / "p.yaml", spec.replace("MODEL", "gemini-2.5-flsh"))
    typo = cli("validate", "p.yaml")
    assert typo.code == 0  # a warning: new models are not refused
    assert (
        "p.yaml: warning: model: 'gemini-2.5-flsh' is not a model batchflow knows; did you mean" in typo.err
    )
    write(tmp_path / "p.yaml", spec.replace("MODEL", "gemini-3.8-flash-001"))
    assert cli("validate", "p.yaml").err == ""


def test_a_prompt_over_the_input_limit(client, emulator):
    """Refusals: prompt over the input limit (sync); in a batch, the same error on its line."""
    huge = "word " * 850_000  # 4.25M characters: 1,062,500 tokens
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(model=MODEL, contents=huge)
    assert "The input token count (1062500) exceeds the maximum number of tokens allowed (1048576)." in (
        refused.value.message
    )
    job = client.batches.create(
        model=MODEL,
        src=[{"contents": [{"parts": [{"text": huge}]}]}, {"contents": [{"parts": [{"text": "hi"}]}]}],
    )
    emulator.store.clock.advance(3600)
    done = client.batches.get(name=job.name)
    first, second = done.dest.inlined_responses
    assert first.error.code == 400 and "exceeds the maximum number of tokens" in first.error.message
    assert second.response.text


def test_parts_the_service_refuses(client):
    """Refusals: empty part, empty inline data, an inline type it takes not, a non-Files-API URI."""
    cases = {
        "required oneof field 'data'": [{"text": ""}],
        "inline data is empty": [{"inlineData": {"mimeType": "image/png", "data": ""}}],
        "Unsupported MIME type: png": [{"inlineData": {"mimeType": "png", "data": "AAAA"}}],
        "Invalid or unsupported file uri: gs://bucket/scones.jpg": [
            {"fileData": {"fileUri": "gs://bucket/scones.jpg", "mimeType": "image/jpeg"}}
        ],
    }
    for message, parts in cases.items():
        with pytest.raises(errors.ClientError) as refused:
            client.models.generate_content(model=MODEL, contents=[{"role": "user", "parts": parts}])
        assert refused.value.code == 400 and message in refused.value.message, message


def test_an_upload_of_a_refused_type(client, tmp_path):
    """Refusals: unsupported MIME on upload, said at finalize."""
    path = tmp_path / "letter.docx"
    path.write_bytes(b"PK...")
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    with pytest.raises(errors.ClientError) as refused:
        client.files.upload(file=str(path), config=types.UploadFileConfig(mime_type=docx))
    assert refused.value.code == 400 and f"Unsupported MIME type: {docx}" in refused.value.message


def test_generation_settings_by_model(client):
    """Refusals by model (the catalog's rules, as validate applies them): logprobs, thinking
    levels and budgets; a model that was shut down."""
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(
            model=MODEL, contents="x", config=types.GenerateContentConfig(response_logprobs=True)
        )
    assert "Logprobs is not enabled for models/gemini-3.8-flash" in refused.value.message
    for model, thinking, said in (
        ("gemini-3.8-flash", {"thinking_level": "MINIMAL"}, "Thinking level MINIMAL is not supported"),
        ("gemini-4-argon", {"thinking_level": "XHIGH"}, "Supported levels: LOW, MEDIUM, HIGH."),
        ("gemini-2.5-flash-lite", {"thinking_level": "LOW"}, "Thinking level is not supported"),
        ("gemini-2.5-flash-lite", {"thinking_budget": 100}, "The thinking budget (100) is invalid."),
        ("gemini-3.8-flash", {"thinking_level": "LOW", "thinking_budget": 10}, "Setting both"),
    ):
        config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(**thinking))
        with pytest.raises(errors.ClientError) as refused:
            client.models.generate_content(model=model, contents="x", config=config)
        assert refused.value.code == 400 and said in refused.value.message, (model, thinking)
    level = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_level="XHIGH"))
    assert client.models.generate_content(model="gemini-4-neon", contents="x", config=level).text
    with pytest.raises(errors.ClientError) as gone:
        client.models.generate_content(model="gemini-2.0-flash", contents="x")
    assert gone.value.code == 404 and gone.value.message == (
        "This model models/gemini-2.0-flash is no longer available. Please update your code to use a "
        "newer model for the latest features and improvements."
    )


def test_a_routed_model_answers_as_its_target(client):
    """gemini-2.5-flash shut down on 2026-12-01 and is routed to gemini-3.5-flash-lite."""
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert answer.model_version == "gemini-3.5-flash-lite"
    assert client.models.get(model="gemini-2.5-flash").display_name == "Gemini 2.5 Flash"


def test_a_malformed_cache_name_is_a_bad_request(emulator):
    body = {"contents": [{"parts": [{"text": "x"}]}], "cachedContent": "my cache"}
    with pytest.raises(urllib.error.HTTPError) as refused:
        _http(f"{emulator.url}/v1beta/models/{MODEL}:generateContent", body)
    assert refused.value.code == 400


def _png(width: int, height: int) -> bytes:
    header = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR"
    return header + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"


def _wav(seconds: int) -> bytes:
    rate = 16_000 * 2  # bytes per second: 16 kHz, 16 bit, mono
    data = b"\x00" * (rate * seconds)
    fmt = (16).to_bytes(4, "little") + b"\x01\x00\x01\x00" + (16_000).to_bytes(4, "little")
    fmt += rate.to_bytes(4, "little") + b"\x02\x00\x10\x00"
    body = b"WAVE" + b"fmt " + fmt + b"data" + len(data).to_bytes(4, "little") + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _mp4(seconds: int) -> bytes:
    mvhd = (
        b"mvhd"
        + b"\x00\x00\x00\x00"
        + b"\x00" * 8
        + (1000).to_bytes(4, "big")
        + (seconds * 1000).to_bytes(4, "big")
    )
    return b"\x00\x00\x00\x18ftypisom" + b"\x00" * 12 + b"\x00\x00\x00\x6cmoov" + b"\x00\x00\x00\x64" + mvhd


@pytest.mark.parametrize(
    ("mime", "data", "expected"),
    [
        ("image/png", _png(100, 100), 258),  # both sides <= 384: one image
        ("image/png", _png(960, 540), 1548),  # the docs' example: 6 tiles of 258
        ("application/pdf", b"%PDF-1.4 /Type /Pages /Type /Page /Type /Page /Type /Page", 774),  # 3 pages
        ("audio/wav", _wav(2), 64),  # 32 a second
        ("video/mp4", _mp4(10), 3000),  # about 300 a second
    ],
)
def test_media_counts_by_the_service_rules(client, tmp_path, mime, data, expected):
    """Tokens per modality: images by tile, PDFs by page, audio and video by second, inline or uploaded."""
    inline = client.models.count_tokens(
        model=MODEL, contents=[types.Part.from_bytes(data=data, mime_type=mime)]
    )
    assert inline.total_tokens == expected
    path = tmp_path / "media"
    path.write_bytes(data)
    uploaded = client.files.upload(file=str(path), config=types.UploadFileConfig(mime_type=mime))
    part = types.Part.from_uri(file_uri=uploaded.uri, mime_type=mime)
    answer = client.models.generate_content(model=MODEL, contents=[part])
    kind = {"image": "IMAGE", "application": "DOCUMENT", "audio": "AUDIO", "video": "VIDEO"}[
        mime.split("/")[0]
    ]
    assert {d.modality.value: d.token_count for d in answer.usage_metadata.prompt_tokens_details} == {
        kind: expected
    }


def test_schemas_as_the_sdk_sends_them(client):
    """Schemas: snake_case keywords, anyOf unions, nullable, propertyOrdering, enums, $defs/$ref."""
    from pydantic import BaseModel

    class Tag(BaseModel):
        name: str
        weight: float | None = None

    class Answer(BaseModel):
        kind: int | str
        tags: list[Tag]
        flag: bool

    answer = client.models.generate_content(
        model=MODEL,
        contents="Tag it",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=Answer),
    )
    parsed = Answer.model_validate_json(answer.text)  # the SDK's own schema, $defs and anyOf included
    assert parsed.tags and isinstance(parsed.flag, bool)
    ordered = client.models.generate_content(
        model=MODEL,
        contents="x",
        config=types.GenerateContentConfig(
            response_mime_type="application/json",
            response_json_schema={
                "type": "object",
                "properties": {"b": {"type": "integer", "enum": [3, 5]}, "a": {"type": "string"}},
                "property_ordering": ["a", "b"],
                "required": ["a", "b"],
            },
        ),
    )
    value = json.loads(ordered.text)
    assert list(value) == ["a", "b"] and value["b"] in (3, 5)


def test_unknown_request_fields_are_refused(emulator):
    """Refusals: an unknown JSON field (a top-level `thinking_config`, say, from a hand-written line)."""
    body = {"contents": [{"parts": [{"text": "x"}]}], "thinking_config": {"thinking_budget": 0}}
    with pytest.raises(urllib.error.HTTPError) as refused:
        _http(f"{emulator.url}/v1beta/models/{MODEL}:generateContent", body)
    error = json.loads(refused.value.read())["error"]
    assert (
        error["message"]
        == 'Invalid JSON payload received. Unknown name "thinking_config": Cannot find field.'
    )
    proto_names = {"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"temperature": 0}}
    assert _http(f"{emulator.url}/v1beta/models/{MODEL}:generateContent", proto_names)["candidates"]


@pytest.mark.parametrize("asked, served", [(None, "standard"), ("FLEX", "flex"), ("priority", "priority")])
def test_the_service_tier_is_taken_and_said_in_a_header(emulator, asked, served):
    """serviceTier sits at the top of the request, in any case; x-gemini-service-tier says which
    tier served it. `store` is a field of the Developer API too."""
    body = {"contents": [{"parts": [{"text": "x"}]}], "store": False}
    if asked:
        body["serviceTier"] = asked
    request = urllib.request.Request(
        f"{emulator.url}/v1beta/models/{MODEL}:generateContent",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "x-goog-api-key": "k"},
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.headers["x-gemini-service-tier"] == served
        assert json.loads(answer.read())["candidates"]


def test_the_sdk_sends_a_service_tier(client):
    assert client.models.generate_content(model=MODEL, contents="x", config={"service_tier": "flex"}).text


def test_a_model_released_after_batchflow_is_served_from_a_models_file(cli, tmp_path, monkeypatch):
    """`batchflow emulator --models FILE` (BATCHFLOW_MODELS): a dry run of a model newer than
    the catalog; validate knows it too."""
    from batchflow.emulator import EmulatorServer

    write(
        tmp_path / "models.yaml",
        """
        models:
          gemini-5-flash:
            name: Gemini 5 Flash
            stage: preview
            input_tokens: 2000000
            output_tokens: 65536
            thinking: {levels: [LOW, HIGH], default: LOW}
            prices: [{input: 1.0, output: 5.0}]
        """,
    )
    monkeypatch.setenv("BATCHFLOW_MODELS", str(tmp_path / "models.yaml"))
    with EmulatorServer(speed=3600) as emu:
        sdk = genai.Client(api_key="k", http_options={"base_url": emu.url})
        assert sdk.models.get(model="gemini-5-flash").input_token_limit == 2_000_000
        assert (
            sdk.models.generate_content(model="gemini-5-flash", contents="hi").model_version
            == "gemini-5-flash"
        )
