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
    status, answer = _call(f"{url}/v1beta/models/gemini-3.8-flash:generateContent?key=anything", "POST", body)
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


def _upload_rest(url: str, key: str, data: bytes, mime: str = "jsonl") -> dict:
    """The resumable upload as a curl user does it: start, then upload+finalize."""
    start = urllib.request.Request(
        f"{url}/upload/v1beta/files?key={key}",
        method="POST",
        data=json.dumps({"file": {"display_name": "rest"}}).encode(),
        headers={
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(len(data)),
            "X-Goog-Upload-Header-Content-Type": mime,
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(start, timeout=10) as resp:
        upload_url = resp.headers["x-goog-upload-url"]
    finish = urllib.request.Request(
        upload_url,
        method="POST",
        data=data,
        headers={"X-Goog-Upload-Offset": "0", "X-Goog-Upload-Command": "upload, finalize"},
    )
    with urllib.request.urlopen(finish, timeout=10) as resp:
        assert resp.headers["x-goog-upload-status"] == "final"
        return json.loads(resp.read())["file"]


def test_rest_flows_for_files_batches_and_caches(emulator_process):
    url = emulator_process("--speed", "3600", "--api-key", "k1")
    line = {"key": "r1", "request": {"contents": [{"parts": [{"text": "over REST"}]}]}}
    file = _upload_rest(url, "k1", (json.dumps(line) + "\n").encode())
    assert file["displayName"] == "rest" and file["sizeBytes"] == str(len(json.dumps(line)) + 1)
    status, listed = _call(f"{url}/v1beta/files?key=k1")
    assert status == 200 and [f["name"] for f in listed["files"]] == [file["name"]]

    status, op = _call(
        f"{url}/v1beta/models/gemini-3.8-flash:batchGenerateContent?key=k1",
        "POST",
        {"batch": {"display_name": "rest-job", "input_config": {"file_name": file["name"]}}},
    )
    assert status == 200 and op["metadata"]["state"] == "BATCH_STATE_PENDING"
    for _ in range(100):
        status, op = _call(f"{url}/v1beta/{op['name']}?key=k1")
        if op.get("done"):
            break
    assert op["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert op["metadata"]["batchStats"]["successfulRequestCount"] == "1"
    out_name = op["metadata"]["output"]["responsesFile"]
    with urllib.request.urlopen(f"{url}/download/v1beta/{out_name}:download?alt=media&key=k1") as resp:
        result = json.loads(resp.read())
    assert (
        result["key"] == "r1"
        and "over REST" in result["response"]["candidates"][0]["content"]["parts"][0]["text"]
    )

    status, cache = _call(
        f"{url}/v1beta/cachedContents?key=k1",
        "POST",
        {
            "model": "models/gemini-3.8-flash",
            "ttl": "86400s",
            "contents": [{"role": "user", "parts": [{"text": "a long document " * 1100}]}],
        },
    )
    assert status == 200 and cache["name"].startswith("cachedContents/")
    status, patched = _call(f"{url}/v1beta/{cache['name']}?key=k1", "PATCH", {"ttl": "172800s"})
    assert status == 200 and patched["expireTime"] > cache["expireTime"]
    assert _call(f"{url}/v1beta/{cache['name']}?key=k1", "DELETE")[0] == 200
    assert _call(f"{url}/v1beta/{cache['name']}?key=k1")[0] == 403


def test_bad_faults_option_is_a_usage_error():
    done = subprocess.run(
        [sys.executable, "-m", "batchflow", "emulator", "--faults", "nope=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown fault" in done.stderr and "Traceback" not in done.stderr
