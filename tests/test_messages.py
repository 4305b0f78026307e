"""One clear line for the mistakes a user makes: which file, line and field, and what to do."""

from __future__ import annotations

import json
import socket

from conftest import write

from batchflow.emulator import EmulatorServer

SPEC = """
    version: 1
    name: talk
    model: gemini-3.8-flash
    source: {uri: data/in.SUFFIX, key: "{{ id }}"}
    request: {prompt: "Say {{ word }}"}
    output: {uri: out.jsonl}
"""


def test_a_busy_port_is_one_line(cli):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("emulator", "--port", str(port))
    assert result.code == 1
    assert result.err.strip().startswith(f"error: cannot listen on 127.0.0.1:{port}:")
    assert "--port" in result.err and len(result.err.strip().splitlines()) == 1


def test_bad_json_names_one_line_and_a_column(cli, tmp_path):
    write(tmp_path / "pipelines/talk.yaml", SPEC.replace("SUFFIX", "jsonl"))
    write(
        tmp_path / "pipelines/data/in.jsonl",
        '{"id": 1, "word": "a"}\n{"id": 2, "word": "b"}\n{"id": 3, word}\n',
    )
    result = cli("validate")
    assert result.code == 1
    assert "data/in.jsonl:3: invalid JSON at column 11: Expecting property name" in result.err
    assert "line 1 column" not in result.err


def test_a_csv_in_another_encoding_suggests_csv_encoding(cli, tmp_path):
    write(tmp_path / "pipelines/talk.yaml", SPEC.replace("SUFFIX", "csv"))
    (tmp_path / "pipelines/data").mkdir()
    (tmp_path / "pipelines/data/in.csv").write_bytes("id,word\n1,café\n".encode("latin-1"))
    result = cli("validate")
    assert result.code == 1 and "set source.csv.encoding" in result.err


def test_api_errors_name_the_pipeline_and_a_missing_key_says_so(cli, tmp_path, monkeypatch):
    write(tmp_path / "pipelines/talk.yaml", SPEC.replace("SUFFIX", "jsonl"))
    write(tmp_path / "pipelines/data/in.jsonl", json.dumps({"id": 1, "word": "a"}) + "\n")
    with EmulatorServer(speed=3600, api_key="sekret") as emu:
        monkeypatch.setenv("BATCHFLOW_API_BASE_URL", emu.url)
        result = cli("apply")
        assert result.code == 1
        assert result.err.strip() == (
            f"talk: error: no API key is set, and {emu.url} wants one: set GEMINI_API_KEY "
            "(for an emulator started with --api-key, that key) (pipelines/talk.yaml)"
        )
        result = cli("apply", env={"GEMINI_API_KEY": "wrong"})
        assert (
            result.code == 1 and result.err.startswith("talk: error: ") and "API key not valid" in result.err
        )
        assert "wrong" not in result.err  # the key itself is never printed


def test_help_texts_keep_their_defaults_and_variables(cli):
    # Rich reads [brackets] as markup and drops them: help must not use them.
    text = cli("apply", "--help").out
    for words in (
        "BATCHFLOW_STATE",
        "gs://",
        "batchflow.yaml",
        "BATCHFLOW_LOCK_TIMEOUT",
        "the project's pipelines",
    ):
        assert words in " ".join(text.replace("│", " ").split()), words
