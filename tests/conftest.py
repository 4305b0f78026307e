"""Shared fixtures: a real emulator over HTTP, and the CLI run in-process."""

from __future__ import annotations

import os

# Must be set before anything imports gcsfs (see shared offline-cloud-testing notes).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import textwrap
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
    """No test sees the developer's keys, settings or .env."""
    for name in list(os.environ):
        if name.startswith("BATCHFLOW_") or name in (
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "GOOGLE_GEMINI_BASE_URL",
        ):
            monkeypatch.delenv(name, raising=False)
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


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path
