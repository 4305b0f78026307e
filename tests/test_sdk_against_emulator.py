"""The unmodified google-genai SDK works against the emulator, call by call."""

from __future__ import annotations

import json
import time

import pytest
from google.genai import errors


def _wait_done(client, name: str):
    for _ in range(200):
        job = client.batches.get(name=name)
        if job.state.name in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"{name} did not finish")


def test_file_batch_flow(client, tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [
        {
            "key": "a",
            "request": {"contents": [{"parts": [{"text": "Why is the sky blue?"}], "role": "user"}]},
        },
        {
            "key": "b",
            "request": {
                "contents": [{"parts": [{"text": "Name a colour"}]}],
                "generationConfig": {
                    "responseMimeType": "application/json",
                    "responseSchema": {
                        "type": "OBJECT",
                        "properties": {"colour": {"type": "STRING", "enum": ["red", "blue"]}},
                        "required": ["colour"],
                    },
                },
            },
        },
    ]
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))

    uploaded = client.files.upload(file=str(src), config={"display_name": "in", "mime_type": "jsonl"})
    assert uploaded.name.startswith("files/")
    assert uploaded.size_bytes == src.stat().st_size
    assert client.files.get(name=uploaded.name).display_name == "in"

    job = client.batches.create(model="gemini-3.8-flash", src=uploaded.name, config={"display_name": "job1"})
    assert job.name.startswith("batches/")
    assert job.state.name == "JOB_STATE_PENDING"
    assert job.display_name == "job1"

    job = _wait_done(client, job.name)
    assert job.state.name == "JOB_STATE_SUCCEEDED"
    results = {
        r["key"]: r for r in map(json.loads, client.files.download(file=job.dest.file_name).splitlines())
    }
    assert set(results) == {"a", "b"}
    assert "sky" in results["a"]["response"]["candidates"][0]["content"]["parts"][0]["text"]
    colour = json.loads(results["b"]["response"]["candidates"][0]["content"]["parts"][0]["text"])
    assert colour["colour"] in ("red", "blue")
    assert results["a"]["response"]["usageMetadata"]["totalTokenCount"] > 0

    assert [j.name for j in client.batches.list()] == [job.name]


def test_download_to_destination_streams_to_disk(client, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"key": "x", "request": {"contents": [{"parts": [{"text": "hi"}]}]}}\n' * 3)
    uploaded = client.files.upload(file=str(src), config={"mime_type": "jsonl"})
    dest = tmp_path / "copy.jsonl"
    client.files.download(file=uploaded.name, destination=str(dest))
    assert dest.read_bytes() == src.read_bytes()


def test_inline_batch_keeps_request_order(client):
    requests = [
        {"contents": [{"parts": [{"text": f"prompt {i}"}]}], "metadata": {"key": f"k{i}"}} for i in range(5)
    ]
    job = client.batches.create(model="gemini-3.8-flash", src=requests)
    job = _wait_done(client, job.name)
    responses = job.dest.inlined_responses
    assert [r.metadata["key"] for r in responses] == [f"k{i}" for i in range(5)]
    assert all("prompt" in r.response.text for r in responses)


def test_generate_content_is_deterministic(client):
    a = client.models.generate_content(model="gemini-3.8-flash", contents="Hello there")
    b = client.models.generate_content(model="gemini-3.8-flash", contents="Hello there")
    assert a.text == b.text and "Hello there" in a.text
    assert a.usage_metadata.prompt_token_count > 0


def test_unknown_batch_is_not_found(client):
    with pytest.raises(errors.ClientError) as info:
        client.batches.get(name="batches/doesnotexist")
    assert info.value.code == 404


def test_unknown_model_is_refused(client, tmp_path):
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="no-such-model", contents="hi")
    assert info.value.code == 404


def test_the_pytest_plugin_fixture_serves_the_emulator(gemini_emulator):
    from google import genai

    client = genai.Client(api_key="k", http_options={"base_url": gemini_emulator.url})
    assert client.models.count_tokens(model="gemini-3.8-flash", contents="hello there").total_tokens > 0


def test_function_calls_candidates_and_thoughts_through_the_sdk(client):
    from google.genai import types

    weather = types.FunctionDeclaration(
        name="get_weather",
        parameters_json_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    )
    tool = types.Tool(function_declarations=[weather])
    called = client.models.generate_content(
        model="gemini-3.8-flash",
        contents="What is the weather in Paris? Use get_weather.",
        config=types.GenerateContentConfig(tools=[tool]),
    )
    (call,) = called.function_calls
    assert call.name == "get_weather" and isinstance(call.args["city"], str)
    # Mode NONE never calls; mode ANY always does.
    none = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE"))
    text = client.models.generate_content(
        model="gemini-3.8-flash",
        contents="Use get_weather.",
        config=types.GenerateContentConfig(tools=[tool], tool_config=none),
    )
    assert text.function_calls is None and text.text
    any_mode = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY"))
    forced = client.models.generate_content(
        model="gemini-3.8-flash",
        contents="Hello",
        config=types.GenerateContentConfig(tools=[tool], tool_config=any_mode),
    )
    assert forced.function_calls[0].name == "get_weather"
    # After the function's answer, the model answers in text.
    answered = client.models.generate_content(
        model="gemini-3.8-flash",
        contents=[
            types.Content(role="user", parts=[types.Part(text="Weather in Paris? Use get_weather.")]),
            types.Content(role="model", parts=[types.Part(function_call=call)]),
            types.Content(
                role="user",
                parts=[types.Part.from_function_response(name="get_weather", response={"sky": "clear"})],
            ),
        ],
        config=types.GenerateContentConfig(tools=[tool]),
    )
    assert answered.function_calls is None and answered.text

    two = client.models.generate_content(
        model="gemini-3.8-flash",
        contents="Say hi",
        config=types.GenerateContentConfig(
            candidate_count=2, thinking_config=types.ThinkingConfig(include_thoughts=True)
        ),
    )
    assert len(two.candidates) == 2
    parts = two.candidates[0].content.parts
    assert parts[0].thought and not parts[1].thought
    assert two.usage_metadata.thoughts_token_count > 0
    with pytest.raises(errors.ClientError) as refused:
        client.models.generate_content(
            model="gemini-3.8-flash", contents="x", config=types.GenerateContentConfig(candidate_count=0)
        )
    assert refused.value.code == 400
