"""A poll reads jobs over plain HTTP (backends/rest.py); it must read each job as the SDK does."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest

from batchflow.backends.gemini import GeminiBackend
from batchflow.backends.rest import JobReader
from batchflow.errors import RemoteError
from batchflow.settings import Settings


def _job(backend: GeminiBackend, tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.jsonl"
    request = {"contents": [{"role": "user", "parts": [{"text": f"Say {name}"}]}]}
    path.write_text(json.dumps({"key": name, "request": request}) + "\n")
    return backend.create("gemini-3.8-flash", backend.upload(path, name), name).name


def test_a_job_read_over_http_is_the_job_the_sdk_reads(emulator, client, tmp_path):
    settings = Settings(api_base_url=emulator.url)
    backend, reader = GeminiBackend(settings), JobReader(settings)
    succeeded = _job(backend, tmp_path, "succeeded")
    emulator.store.clock.advance(3600)
    assert client.batches.get(name=succeeded).state.name == "JOB_STATE_SUCCEEDED"
    httpx.post(f"{emulator.url}/_emulator/faults", json={"job_fail_rate": 1.0}).raise_for_status()
    failed = _job(backend, tmp_path, "failed")
    emulator.store.clock.advance(3600)
    assert client.batches.get(name=failed).state.name == "JOB_STATE_FAILED"
    httpx.post(f"{emulator.url}/_emulator/faults", json={"job_fail_rate": 0.0}).raise_for_status()
    emulator.store.clock.set_speed(0)  # pending, and stays so
    pending = _job(backend, tmp_path, "pending")
    cancelled = _job(backend, tmp_path, "cancelled")
    client.batches.cancel(name=cancelled)
    for name in (pending, cancelled, failed, succeeded):
        assert reader.get(name) == backend._read(client.batches.get(name=name)), name
    assert reader.get(pending).state == "JOB_STATE_PENDING"
    assert reader.get(failed).error is not None and reader.get(succeeded).result_file


def test_a_read_the_service_refuses_or_cannot_answer_is_a_remote_error(emulator):
    with pytest.raises(RemoteError) as missing:
        JobReader(Settings(api_base_url=emulator.url)).get("batches/none")
    assert missing.value.code == 404 and not missing.value.transient
    unreachable = JobReader(Settings(api_base_url="http://127.0.0.1:9", http_attempts=1))
    with pytest.raises(RemoteError, match="cannot reach the Gemini API at http://127.0.0.1:9") as down:
        unreachable.get("batches/x")
    assert down.value.transient
