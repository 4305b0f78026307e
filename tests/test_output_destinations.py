"""Outputs that cannot be written are found before anything is uploaded; outputs get normal permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import write

SPEC = """
    version: 1
    name: dest
    model: gemini-3.8-flash
    source: {uri: data/q.jsonl, key: "{{ id }}"}
    request: {prompt: "{{ q }}"}
    output: {uri: OUT}
    ERRORS
"""


def _project(tmp_path, out: str, errors: str = "") -> None:
    write(tmp_path / "pipelines/dest.yaml", SPEC.replace("OUT", out).replace("ERRORS", errors))
    write(
        tmp_path / "pipelines/data/q.jsonl", "".join(json.dumps({"id": i, "q": i}) + "\n" for i in range(2))
    )


def _nothing_sent(client) -> bool:
    return list(client.files.list()) == [] and list(client.batches.list()) == []


@pytest.mark.parametrize(
    "out, errors, problem",
    [
        ("blocker/out.jsonl", "", "blocker is a file, not a folder"),
        ("out.jsonl", "errors: {uri: blocker/deep/failed.jsonl}", "blocker is a file, not a folder"),
        ("a-folder.jsonl", "", "is a folder, not a file"),
    ],
)
def test_an_output_that_cannot_be_written_stops_plan_and_apply_before_any_upload(
    out, errors, problem, cli, client, emulator_env, tmp_path
):
    _project(tmp_path, out, errors)
    (tmp_path / "pipelines/blocker").write_text("a file where a folder should be")
    (tmp_path / "pipelines/a-folder.jsonl").mkdir()
    for command in ("plan", "apply"):
        result = cli(command, "--wait" if command == "apply" else "--detailed-exitcode")
        assert result.code == 1, result.out + result.err
        assert problem in result.err and "Traceback" not in result.err
        assert len(result.err.strip().splitlines()) == 1
    assert _nothing_sent(client)


def test_an_output_in_a_missing_bucket_stops_apply_before_any_upload(
    cli, client, emulator_env, s3_bucket, tmp_path
):
    _project(tmp_path, f"s3://{s3_bucket}-missing/out.jsonl")
    plan = cli("plan")
    assert plan.code == 1 and "the bucket does not exist" in plan.err
    result = cli("apply")
    assert result.code == 1 and "cannot write there" in result.err and "Traceback" not in result.err
    assert _nothing_sent(client)


def test_outputs_get_the_permissions_of_any_new_file(cli, emulator_env, tmp_path):
    _project(tmp_path, "out/ok.jsonl", "errors: {uri: out/failed.jsonl}")
    old = os.umask(0o022)
    try:
        assert cli("apply", "--wait").code == 0
    finally:
        os.umask(old)
    for name in ("ok.jsonl", "failed.jsonl"):
        mode = stat.S_IMODE((tmp_path / "pipelines/out" / name).stat().st_mode)
        assert mode == 0o644, oct(mode)
