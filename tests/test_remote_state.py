"""State stores at gs:// and s3:// URLs: shared by machines, locked, crash-safe."""

from __future__ import annotations

import functools
import json
import os
import socket

import fsspec
import pytest
from conftest import apply_again, kill_apply, project

SPEC = """
    version: 1
    name: shared
    model: gemini-3.8-flash
    source: {uri: data.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ id }}"}
    batch: {max_requests: 2}
    output: {uri: out.jsonl}
"""


@pytest.fixture(params=["s3", "gs"])
def state_url(request):
    bucket = request.getfixturevalue("s3_bucket" if request.param == "s3" else "gcs_bucket")
    return f"{request.param}://{bucket}/batchflow-state"


_project = functools.partial(project, spec=SPEC)


def test_two_machines_share_one_pipeline(cli, client, emulator_env, state_url, tmp_path, monkeypatch):
    _project(tmp_path)
    env = {"BATCHFLOW_STATE": state_url}
    assert cli("apply", "--wait", env=env).code == 0
    fs, base = fsspec.core.url_to_fs(state_url)
    assert fs.exists(f"{base}/shared/state.json")
    shards = fs.ls(f"{base}/shared/shards")  # each with its records' keys beside it
    assert len(shards) == 6 and sum(name.endswith(".keys") for name in shards) == 3
    assert len(fs.ls(f"{base}/shared/results")) == 3
    assert not fs.exists(f"{base}/shared/lock")

    # Another machine: an empty local mirror. It sees the work as done and sends nothing.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-machine-cache"))
    assert "up to date" in cli("plan", env=env).out
    again = cli("apply", env=env)
    assert again.code == 0 and "up to date, nothing to do" in again.out
    assert len(list(client.batches.list())) == 3

    # The source grows; the other machine sends only the new records.
    _project(tmp_path, 7)
    assert cli("apply", "--wait", env=env).code == 0
    assert len(list(client.batches.list())) == 4
    assert len((tmp_path / "pipelines/out.jsonl").read_text().splitlines()) == 7


def test_a_lock_held_elsewhere_stops_apply(cli, client, emulator_env, state_url, tmp_path):
    _project(tmp_path)
    fs, base = fsspec.core.url_to_fs(state_url)
    holder = {"pid": 1, "host": "ci-runner-7", "since": "2026-11-26T09:00:00Z"}
    fs.pipe_file(f"{base}/shared/lock", json.dumps(holder).encode())
    result = cli("apply", env={"BATCHFLOW_STATE": state_url})
    assert result.code == 1
    assert (
        "locked by another apply (pid 1 on ci-runner-7" in result.err
        and f"{state_url}/shared/lock" in result.err
    )
    assert list(client.batches.list()) == []


def test_a_dead_local_holder_is_taken_over(cli, emulator_env, state_url, tmp_path):
    import subprocess
    import sys

    _project(tmp_path, 1)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    fs, base = fsspec.core.url_to_fs(state_url)
    holder = {"pid": gone.pid, "host": socket.gethostname(), "since": "earlier"}
    fs.pipe_file(f"{base}/shared/lock", json.dumps(holder).encode())
    assert cli("apply", "--wait", env={"BATCHFLOW_STATE": state_url}).code == 0


def test_only_one_of_two_racing_locks_wins(state_url):
    from batchflow.errors import LockedError
    from batchflow.state.store import RemoteStore

    first, second = RemoteStore(state_url), RemoteStore(state_url)
    with first.lock("race"):
        with pytest.raises(LockedError):
            with second.lock("race"):
                pass
    with second.lock("race"):  # released: free again
        pass


def test_destroy_removes_the_remote_state(cli, client, emulator_env, state_url, tmp_path):
    _project(tmp_path, 2)
    env = {"BATCHFLOW_STATE": state_url}
    assert cli("apply", "--wait", env=env).code == 0
    assert cli("destroy", "--yes", env=env).code == 0
    fs, base = fsspec.core.url_to_fs(state_url)
    assert not fs.exists(f"{base}/shared/state.json")
    assert list(client.batches.list()) == []


@pytest.mark.parametrize("kill_after_lines", [2, 5, 8])
def test_kill_9_with_a_remote_store_then_apply_elsewhere(
    kill_after_lines, client, emulator_env, s3_bucket, tmp_path
):
    """Killed mid-run on one machine, finished on another: no duplicate job, every result."""
    import os
    import subprocess
    import sys

    _project(tmp_path)
    state = f"s3://{s3_bucket}/st"
    env = {**os.environ, **emulator_env, "BATCHFLOW_STATE": state, "XDG_CACHE_HOME": str(tmp_path / "one")}
    kill_apply(env, kill_after_lines)
    fs, base = fsspec.core.url_to_fs(state)
    # The killed run's lock: from another host it cannot tell the holder is dead; a person says so.
    assert subprocess.run([sys.executable, "-m", "batchflow", "unlock", "--yes"], env=env).returncode == 0
    assert not fs.exists(f"{base}/shared/lock")
    env["XDG_CACHE_HOME"] = str(tmp_path / "two")
    apply_again(env)
    jobs = list(client.batches.list())
    assert len(jobs) == 3 and len({j.display_name for j in jobs}) == 3
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [str(i) for i in range(5)]


def test_a_new_runner_downloads_only_what_it_reads(cli, emulator_env, state_url, tmp_path, monkeypatch):
    _project(tmp_path)
    env = {"BATCHFLOW_STATE": state_url}
    assert cli("apply", "--wait", env=env).code == 0
    fs, base = fsspec.core.url_to_fs(state_url)
    (snapshot,) = fs.ls(f"{base}/shared/index", detail=False)  # the index, beside the state it matches

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "runner-2"))

    def downloaded(kind: str) -> list[str]:
        folder = next((tmp_path / "runner-2").glob(f"batchflow/*/shared/{kind}"), None)
        return sorted(p.name for p in folder.iterdir()) if folder else []

    assert "3 done" in cli("status", env=env).out
    assert "up to date" in cli("plan", env=env).out  # nothing it reads changed: no index needed
    assert downloaded("results") == [] and downloaded("shards") == []
    os.utime(tmp_path / "pipelines/data.jsonl")  # the source must be read again: the index is needed
    assert "up to date" in cli("plan", env=env).out
    assert downloaded("results") == [] and downloaded("shards") == []  # the snapshot, not a rebuild

    (tmp_path / "pipelines/out.jsonl").unlink()  # writing the output reads every result
    assert cli("apply", env=env).code == 0
    assert len(downloaded("results")) == 3
    assert len((tmp_path / "pipelines/out.jsonl").read_text().splitlines()) == 5
    (now,) = fs.ls(f"{base}/shared/index", detail=False)  # the apply left one for its own state
    assert now != snapshot
