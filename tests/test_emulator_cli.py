"""`batchflow emulator` as a subprocess: the command-line contract and plain REST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest


@pytest.fixture
def emulator_process():
    def start(*args: str):
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchflow", "emulator", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "BATCHFLOW_EMULATOR_API_KEY"},
        )
        procs.append(proc)
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on http://127.0.0.1:"), first + proc.stderr.read()
        return first.removeprefix("listening on ")

    procs: list[subprocess.Popen] = []
    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def _call(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_first_line_announces_url_and_rest_works_with_key_param(emulator_process):
    url = emulator_process("--speed", "3600")
    body = {"contents": [{"parts": [{"text": "hello from curl"}]}]}
    status, answer = _call(f"{url}/v1beta/models/gemini-2.5-flash:generateContent?key=anything", "POST", body)
    assert status == 200
    assert "hello from curl" in answer["candidates"][0]["content"]["parts"][0]["text"]


def test_missing_and_wrong_keys_get_the_services_errors(emulator_process):
    url = emulator_process("--api-key", "sekret")
    status, answer = _call(f"{url}/v1beta/batches")
    assert status == 403 and answer["error"]["status"] == "PERMISSION_DENIED"
    status, answer = _call(f"{url}/v1beta/batches?key=wrong")
    assert status == 400 and answer["error"]["message"] == "API key not valid. Please pass a valid API key."
    status, answer = _call(f"{url}/v1beta/batches", headers={"x-goog-api-key": "sekret"})
    assert status == 200 and answer == {"operations": []}
