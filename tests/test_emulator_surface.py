"""The emulator's whole surface through the unmodified google-genai SDK."""

from __future__ import annotations

import json
import time
import warnings

import pytest
from conftest import TEST_SPEED
from google.genai import errors, types

from batchflow.emulator import EmulatorServer, Faults

DONE = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")
LONG_TEXT = (
    "The style guide says: write plainly, cite sources, prefer short sentences. " * 250
)  # > 4,096 tokens, the smallest cache gemini-3.8-flash takes


def _wait(client, name, states=DONE):
    for _ in range(500):
        job = client.batches.get(name=name)
        if job.state.name in states:
            return job
        time.sleep(0.01)
    raise AssertionError(f"{name} stayed {job.state.name}")


def _upload_jsonl(client, tmp_path, lines, name="in.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return client.files.upload(file=str(path), config={"mime_type": "jsonl"})


def _req(text, **extra):
    return {"contents": [{"parts": [{"text": text}], "role": "user"}], **extra}


# ---------------------------------------------------------------- files and batches


def test_lists_page_through_everything(client, tmp_path):
    names = {
        _upload_jsonl(client, tmp_path, [{"key": "a", "request": _req("x")}], f"f{i}.jsonl").name
        for i in range(5)
    }
    pager = client.files.list(config={"page_size": 2})
    assert len(pager.page) == 2
    assert {f.name for f in pager} == names
    jobs = {client.batches.create(model="gemini-3.8-flash", src=[_req("x")]).name for _ in range(5)}
    assert {j.name for j in client.batches.list(config={"page_size": 2})} == jobs


def test_delete_file_and_batch(client, tmp_path):
    f = _upload_jsonl(client, tmp_path, [{"key": "a", "request": _req("x")}])
    client.files.delete(name=f.name)
    with pytest.raises(errors.ClientError):
        client.files.get(name=f.name)
    job = client.batches.create(model="gemini-3.8-flash", src=[_req("x")])
    client.batches.delete(name=job.name)
    with pytest.raises(errors.ClientError) as info:
        client.batches.get(name=job.name)
    assert info.value.code == 404


def test_cancel_takes_effect_shortly_and_keeps_partial_results(client, emulator, tmp_path):
    emulator.store.clock.set_speed(1)
    f = _upload_jsonl(client, tmp_path, [{"key": str(i), "request": _req(f"q{i}")} for i in range(1000)])
    job = client.batches.create(model="gemini-3.8-flash", src=f.name)
    emulator.store.clock.advance(30 + 55)  # running, about half way (60 s + 50 s for 1,000 requests)
    assert client.batches.get(name=job.name).state.name == "JOB_STATE_RUNNING"
    client.batches.cancel(name=job.name)
    # The wire has no CANCELLING state: the job runs on until the cancel takes effect.
    assert client.batches.get(name=job.name).state.name == "JOB_STATE_RUNNING"
    emulator.store.clock.advance(10)
    job = client.batches.get(name=job.name)
    assert job.state.name == "JOB_STATE_CANCELLED"
    lines = client.files.download(file=job.dest.file_name).splitlines()
    assert 0 < len(lines) < 1000


def test_pending_job_cancelled_has_no_results(client, emulator):
    emulator.store.clock.set_speed(1)
    job = client.batches.create(model="gemini-3.8-flash", src=[_req("x")])
    client.batches.cancel(name=job.name)
    emulator.store.clock.advance(10)
    job = client.batches.get(name=job.name)
    assert job.state.name == "JOB_STATE_CANCELLED"
    assert job.dest is None or not job.dest.inlined_responses


def test_malformed_lines_get_per_line_errors(client, emulator, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps({"key": "ok", "request": _req("fine")})
        + "\n{not json\n"
        + json.dumps({"key": "empty", "request": {"contents": []}})
        + "\n"
    )
    f = client.files.upload(file=str(path), config={"mime_type": "jsonl"})
    job = _wait(client, client.batches.create(model="gemini-3.8-flash", src=f.name).name)
    results = [json.loads(line) for line in client.files.download(file=job.dest.file_name).splitlines()]
    assert [("error" in r) for r in results] == [False, True, True]
    assert results[2]["error"]["code"] == 400 and results[2]["key"] == "empty"


def test_unknown_model_is_refused_on_create(client, tmp_path):
    f = _upload_jsonl(client, tmp_path, [{"key": "a", "request": _req("x")}])
    with pytest.raises(errors.ClientError) as info:
        client.batches.create(model="gemini-9-imaginary!", src=f.name)
    assert info.value.code == 404


def test_multimodal_request_refers_to_an_uploaded_image(client, tmp_path):
    png = tmp_path / "cat.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    image = client.files.upload(file=str(png))
    assert image.mime_type == "image/png"
    part = {"file_data": {"file_uri": image.uri, "mime_type": "image/png"}}
    job = client.batches.create(
        model="gemini-3.8-flash",
        src=[{"contents": [{"parts": [{"text": "Describe"}, part], "role": "user"}]}],
    )
    (answer,) = _wait(client, job.name).dest.inlined_responses
    assert answer.error is None
    assert answer.response.usage_metadata.prompt_token_count > 258  # the image counts
    client.files.delete(name=image.name)
    job = client.batches.create(
        model="gemini-3.8-flash",
        src=[{"contents": [{"parts": [{"text": "Describe"}, part], "role": "user"}]}],
    )
    (answer,) = _wait(client, job.name).dest.inlined_responses
    assert answer.error is not None and answer.error.code == 403


# ---------------------------------------------------------------- embeddings


def test_embedding_batches_from_file_and_inline(client, tmp_path):
    warnings.simplefilter("ignore")  # create_embeddings is experimental in the SDK
    lines = [
        {"key": f"d{i}", "request": {"content": {"parts": [{"text": f"doc {i}"}]}, "outputDimensionality": 8}}
        for i in range(3)
    ]
    f = _upload_jsonl(client, tmp_path, lines)
    job = client.batches.create_embeddings(model="gemini-embedding-001", src={"file_name": f.name})
    job = _wait(client, job.name)
    results = [json.loads(line) for line in client.files.download(file=job.dest.file_name).splitlines()]
    assert [len(r["response"]["embedding"]["values"]) for r in results] == [8, 8, 8]

    inline = client.batches.create_embeddings(
        model="gemini-embedding-001",
        src={"inlined_requests": {"contents": ["a", "b"], "config": {"output_dimensionality": 16}}},
    )
    responses = _wait(client, inline.name).dest.inlined_embed_content_responses
    assert [len(r.response.embedding.values) for r in responses] == [16, 16]


def test_sync_embeddings_are_deterministic_unit_vectors(client):
    a = client.models.embed_content(
        model="gemini-embedding-001", contents="hello", config={"output_dimensionality": 32}
    )
    b = client.models.embed_content(
        model="gemini-embedding-001", contents=["hello", "bye"], config={"output_dimensionality": 32}
    )
    assert a.embeddings[0].values == b.embeddings[0].values
    assert abs(sum(v * v for v in a.embeddings[0].values) - 1) < 1e-3
    assert b.embeddings[0].values != b.embeddings[1].values


# ---------------------------------------------------------------- caches


def test_cache_lifecycle_and_cached_tokens(client, emulator):
    cache = client.caches.create(
        model="gemini-3.8-flash",
        config={
            "contents": [{"parts": [{"text": LONG_TEXT}], "role": "user"}],
            "system_instruction": "Follow the style guide.",
            "ttl": "86400s",
            "display_name": "guide",
        },
    )
    assert cache.name.startswith("cachedContents/") and cache.display_name == "guide"
    assert cache.usage_metadata.total_token_count > 1024
    assert client.caches.get(name=cache.name).name == cache.name
    assert [c.name for c in client.caches.list()] == [cache.name]
    updated = client.caches.update(name=cache.name, config={"ttl": "172800s"})
    assert updated.expire_time > cache.expire_time

    answer = client.models.generate_content(
        model="gemini-3.8-flash", contents="Summarise", config={"cached_content": cache.name}
    )
    usage = answer.usage_metadata
    assert usage.cached_content_token_count == cache.usage_metadata.total_token_count
    assert usage.prompt_token_count > usage.cached_content_token_count

    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(
            model="gemini-3.8-flash",
            contents="x",
            config={"cached_content": cache.name, "system_instruction": "no"},
        )
    assert info.value.code == 400

    emulator.store.clock.advance(172800)
    with pytest.raises(errors.ClientError):
        client.models.generate_content(
            model="gemini-3.8-flash", contents="x", config={"cached_content": cache.name}
        )
    with pytest.raises(errors.ClientError):
        client.caches.get(name=cache.name)


def test_cache_too_small_and_delete(client):
    with pytest.raises(errors.ClientError) as info:
        client.caches.create(model="gemini-3.8-flash", config={"contents": ["tiny"]})
    assert info.value.code == 400 and "too small" in info.value.message
    cache = client.caches.create(model="gemini-3.8-flash", config={"contents": [LONG_TEXT]})
    client.caches.delete(name=cache.name)
    assert list(client.caches.list()) == []


def test_batch_requests_use_a_cache(client):
    cache = client.caches.create(model="gemini-3.8-flash", config={"contents": [LONG_TEXT], "ttl": "86400s"})
    job = client.batches.create(
        model="gemini-3.8-flash",
        src=[{"contents": [{"parts": [{"text": "q"}]}], "config": {"cached_content": cache.name}}],
    )
    (answer,) = _wait(client, job.name).dest.inlined_responses
    assert answer.response.usage_metadata.cached_content_token_count > 1024


def test_google_search_tool_adds_grounding(client):
    answer = client.models.generate_content(
        model="gemini-3.8-flash",
        contents="Who won?",
        config={"tools": [types.Tool(google_search=types.GoogleSearch())]},
    )
    assert answer.candidates[0].grounding_metadata.web_search_queries == ["Who won?"]


# ---------------------------------------------------------------- faults, clock and persistence


def _emulator_with(**faults):
    return EmulatorServer(speed=TEST_SPEED, faults=Faults(**faults))


def _client(emu, **options):
    from google import genai

    return genai.Client(api_key="k", http_options={"base_url": emu.url, **options})


def test_failed_and_expired_jobs_and_failed_lines():
    with _emulator_with(job_fail_rate=1.0) as emu:
        c = _client(emu)
        assert _wait(c, c.batches.create(model="gemini-3.8-flash", src=[_req("x")]).name).state.name == (
            "JOB_STATE_FAILED"
        )
    with _emulator_with(job_expire_rate=1.0, expire_after=60) as emu:
        c = _client(emu)
        assert _wait(c, c.batches.create(model="gemini-3.8-flash", src=[_req("x")]).name).state.name == (
            "JOB_STATE_EXPIRED"
        )
    with _emulator_with(line_error_rate=0.5, seed=3) as emu:
        c = _client(emu)
        job = _wait(c, c.batches.create(model="gemini-3.8-flash", src=[_req(str(i)) for i in range(40)]).name)
        failed = [r.error is not None for r in job.dest.inlined_responses]
        assert 5 < sum(failed) < 35
    with _emulator_with(line_error_rate=0.5, seed=3) as emu:  # the same seed gives the same faults
        c = _client(emu)
        again = _wait(
            c, c.batches.create(model="gemini-3.8-flash", src=[_req(str(i)) for i in range(40)]).name
        )
        assert [r.error is not None for r in again.dest.inlined_responses] == failed


def test_rate_limits_are_retried_by_the_sdk_when_asked():
    with _emulator_with(rate_limit_rate=0.5, seed=1) as emu:
        plain = _client(emu)
        retrying = _client(emu, retry_options={"attempts": 10, "initial_delay": 0.01, "max_delay": 0.02})
        outcomes = []
        for _ in range(10):
            try:
                plain.models.count_tokens(model="gemini-3.8-flash", contents="x")
                outcomes.append(200)
            except errors.ClientError as exc:
                outcomes.append(exc.code)
        assert 429 in outcomes and 200 in outcomes
        for _ in range(5):
            assert retrying.models.count_tokens(model="gemini-3.8-flash", contents="x").total_tokens >= 1


def test_admin_endpoints_move_the_clock_and_set_faults(client, emulator):
    import httpx2 as httpx

    emulator.store.clock.set_speed(1)
    job = client.batches.create(model="gemini-3.8-flash", src=[_req("x")])
    httpx.post(f"{emulator.url}/_emulator/clock", json={"advance": 3600}).raise_for_status()
    assert client.batches.get(name=job.name).state.name == "JOB_STATE_SUCCEEDED"
    answer = httpx.post(f"{emulator.url}/_emulator/faults", json={"unavailable_rate": 1.0})
    assert answer.json()["unavailable_rate"] == 1.0
    with pytest.raises(errors.ServerError) as info:
        client.batches.get(name=job.name)
    assert info.value.code == 503
    assert httpx.post(f"{emulator.url}/_emulator/faults", json={"nope": 1}).status_code == 400


def test_data_dir_keeps_files_jobs_and_caches_across_restarts(tmp_path):
    data = tmp_path / "emu"
    with EmulatorServer(speed=TEST_SPEED, data_dir=data) as emu:
        c = _client(emu)
        f = _upload_jsonl(c, tmp_path, [{"key": "a", "request": _req("x")}])
        job = _wait(c, c.batches.create(model="gemini-3.8-flash", src=f.name).name)
        cache = c.caches.create(model="gemini-3.8-flash", config={"contents": [LONG_TEXT], "ttl": "86400s"})
    with EmulatorServer(speed=TEST_SPEED, data_dir=data) as emu:
        c = _client(emu)
        assert c.files.get(name=f.name).size_bytes == f.size_bytes
        again = c.batches.get(name=job.name)
        assert again.state.name == "JOB_STATE_SUCCEEDED"
        assert json.loads(c.files.download(file=again.dest.file_name))["key"] == "a"
        assert c.caches.get(name=cache.name).name == cache.name


def test_faults_parse():
    assert Faults.parse("line_error_rate=0.1, seed=7") == Faults(line_error_rate=0.1, seed=7)
    for bad in ("nope=1", "line_error_rate=2", "line_error_rate=x", "seed"):
        with pytest.raises(ValueError):
            Faults.parse(bad)


def test_uploads_over_2_gb_and_oversized_requests_are_refused(emulator):
    import httpx2 as httpx

    start = httpx.post(
        f"{emulator.url}/upload/v1beta/files",
        headers={
            "x-goog-api-key": "k",
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(2 * 1024**3 + 1),
        },
        json={"file": {}},
    )
    assert start.status_code == 400 and "exceeds" in start.json()["error"]["message"]
    big = {"batch": {"inputConfig": {"requests": {"requests": [_req("x" * (21 * 1024 * 1024))]}}}}
    answer = httpx.post(
        f"{emulator.url}/v1beta/models/gemini-3.8-flash:batchGenerateContent",
        headers={"x-goog-api-key": "k"},
        json=big,
    )
    assert answer.status_code == 400 and "payload size" in answer.json()["error"]["message"]
