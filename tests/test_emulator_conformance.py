"""The emulator answers and refuses as the service does, through the unmodified SDK and plain
HTTP. Expected shapes and wording come from ../shared/gemini-batch-protocol.md (each case
names the section) and the google-genai source."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from google.genai import errors, types

MODEL = "gemini-2.5-flash"


def test_models_list_and_get(client):
    """Model limits and methods (models.get / models.list)."""
    listed = {m.name: m for m in client.models.list()}
    flash = listed["models/gemini-2.5-flash"]
    assert flash.input_token_limit == 1_048_576 and flash.output_token_limit == 65_536
    assert "batchGenerateContent" in flash.supported_actions
    assert "embedContent" in listed["models/gemini-embedding-001"].supported_actions
    assert client.models.get(model="gemini-2.5-pro").display_name == "Gemini 2.5 Pro"
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
    write(tmp_path / "p.yaml", spec.replace("MODEL", "gemini-2.5-flash-preview-09-2025"))
    assert cli("validate", "p.yaml").err == ""
