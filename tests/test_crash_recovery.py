"""A run killed anywhere is finished by the next apply, with no duplicate job."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import apply_again, kill_apply, project, write

from batchflow.backends.gemini import GeminiBackend
from batchflow.run.reconcile import display_name
from batchflow.settings import Settings
from batchflow.state.store import LocalStore, ShardStatus

SPEC = """
    version: 1
    name: crash
    model: gemini-3.8-flash
    source: {uri: data/in.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ word }}"}
    batch: {max_requests: 2}
    output: {uri: out.jsonl}
"""


_project = functools.partial(project, spec=SPEC, spec_file="crash.yaml", data="data/in.jsonl")


def _rewind_to_creating(store: LocalStore, client=None, **state_changes):
    """The state as a kill during a create leaves it: its one shard `creating`, no job recorded.
    With `client`, the job is deleted from the service too: the create never landed. Returns the
    shard and the name of the job it had."""
    state = store.load("crash")
    (shard,) = state.shards.values()
    job = shard.job_name
    if client is not None:
        client.batches.delete(name=job)
    shard.status, shard.job_name, shard.job_state = ShardStatus.CREATING, None, None
    for name, value in state_changes.items():
        setattr(state, name, value)
    store.save(state)
    return shard, job


def test_job_created_but_not_recorded_is_adopted(cli, client, emulator, emulator_env, tmp_path):
    """The window between batches.create and the state write: the job exists, state says `creating`."""
    _project(tmp_path, 2)
    emulator.store.clock.set_speed(1)
    assert cli("apply").code == 0
    # Rewind the state to the moment before the create's answer was saved.
    _rewind_to_creating(LocalStore(emulator_env["BATCHFLOW_STATE"]))
    emulator.store.clock.advance(3600)

    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert "adopted" in result.out
    assert len(list(client.batches.list())) == 1
    assert len((tmp_path / "pipelines/out.jsonl").read_text().splitlines()) == 2


def test_creating_with_no_job_creates_it(cli, client, emulator, emulator_env, tmp_path):
    """The other side of the window: the create never reached the service."""
    _project(tmp_path, 2)
    emulator.store.clock.set_speed(1)
    assert cli("apply").code == 0
    _, job = _rewind_to_creating(LocalStore(emulator_env["BATCHFLOW_STATE"]), client)
    emulator.store.clock.set_speed(3600)

    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert "created" in result.out
    assert [j.name for j in client.batches.list()] != [job]
    assert len(list(client.batches.list())) == 1


def test_a_crash_never_adopts_the_job_of_another_state_store(cli, client, emulator, emulator_env, tmp_path):
    """Two stores hold the same pipeline; one is killed during its create. It must make its own job,
    not adopt the one the other store made (that one is the other store's to download and pay)."""
    _project(tmp_path, 2)
    emulator.store.clock.set_speed(1)
    assert cli("apply").code == 0
    (theirs,) = client.batches.list()
    mine = tmp_path / "other-state"
    assert cli("apply", env={"BATCHFLOW_STATE": str(mine)}).code == 0
    store = LocalStore(mine)
    shard, _ = _rewind_to_creating(store, client)  # as if the kill came before the create landed
    emulator.store.clock.set_speed(3600)

    result = cli("apply", "--wait", env={"BATCHFLOW_STATE": str(mine)})
    assert result.code == 0, result.err
    assert "adopted" not in result.out and "created batches/" in result.out
    assert store.load("crash").shards[shard.id].job_name != theirs.name
    assert theirs.name in {j.name for j in client.batches.list()}


def test_a_state_of_an_earlier_version_adopts_by_the_old_name_then_gets_a_lineage(
    cli, client, emulator, emulator_env, tmp_path
):
    _project(tmp_path, 2)
    emulator.store.clock.set_speed(1)
    assert cli("apply").code == 0
    store = LocalStore(emulator_env["BATCHFLOW_STATE"])
    shard, _ = _rewind_to_creating(store, client, lineage=None)
    old = client.batches.create(  # the job an earlier batchflow made, named as it named them
        model="gemini-3.8-flash",
        src=shard.file_name,
        config={"display_name": display_name("crash", shard)},
    )
    emulator.store.clock.advance(3600)

    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert f"adopted {old.name}" in result.out
    assert cli("apply").code == 0  # nothing awaits adoption any more
    assert store.load("crash").lineage is not None


@pytest.mark.parametrize("kill_after_lines", [1, 3, 6, 9])
def test_kill_9_during_apply_then_apply_again(kill_after_lines, client, emulator, emulator_env, tmp_path):
    """SIGKILL at several points of a real run; the next apply finishes with one job per shard."""
    _project(tmp_path, 5)  # 3 shards
    env = {**os.environ, **emulator_env}
    kill_apply(env, kill_after_lines)
    apply_again(env)
    jobs = list(client.batches.list())
    assert len(jobs) == 3, [j.display_name for j in jobs]
    assert len({j.display_name for j in jobs}) == 3
    rows = [json.loads(line) for line in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [str(i) for i in range(5)]
    assert all("error" not in r for r in rows)


def test_display_names_are_deterministic():
    from batchflow.state.store import Shard

    shard = Shard(id="ab" * 16, requests=1, bytes=10)
    assert display_name("p", shard) == display_name("p", shard.model_copy())
    assert display_name("p", shard) != display_name("p", shard.model_copy(update={"attempt": 2}))


def test_backend_find_returns_job_by_display_name(client, emulator):
    backend = GeminiBackend(Settings(api_base_url=emulator.url))
    assert backend.find("nope") is None
    job = client.batches.create(
        model="gemini-3.8-flash",
        src=[{"contents": [{"parts": [{"text": "x"}]}]}],
        config={"display_name": "wanted"},
    )
    assert backend.find("wanted").name == job.name


def _lock_as(path, pid: int) -> None:
    import socket as _socket
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    lease = {
        "owner": "x",
        "pid": pid,
        "host": _socket.gethostname(),
        "acquired": "earlier",
        "expires": time.time() + 300,
    }
    path.write_text(json.dumps(lease))


def test_a_second_apply_stops_while_the_first_holds_the_lock(cli, client, emulator_env, tmp_path):
    _project(tmp_path, 2)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "state/crash/lock"
        _lock_as(lock, holder.pid)
        result = cli("apply")
        assert result.code == 1
        assert f"locked by another apply (pid {holder.pid}" in result.err and "Traceback" not in result.err
        assert list(client.batches.list()) == []  # it did nothing
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up: its lock is taken over.
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert not lock.exists()


def test_apply_wait_waits_for_the_lock(cli, emulator_env, tmp_path):
    import threading

    _project(tmp_path, 2)
    lock = tmp_path / "state/crash/lock"
    _lock_as(lock, os.getpid())  # held by a live process (this one)
    threading.Timer(2.0, lock.unlink).start()
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    # Said once while it waits (the rounds of --wait come every half second here), and never
    # "run `batchflow unlock`": a live lease is someone at work.
    assert result.err.count("is locked by another apply") == 1 and "trying again" in result.err
    assert "unlock" not in result.err


CACHED = """
    version: 1
    name: crash
    model: gemini-3.8-flash
    source: {uri: data/in.jsonl, key: "{{ id }}"}
    request: {prompt: "Describe {{ id }}", files: ["{{ img }}"]}
    cache: {contents: ["GUIDE"], ttl: 7d}  # 168 s of real time at the tests' clock speed
    batch: {max_requests: 2}
    output: {uri: out.jsonl}
"""


@pytest.mark.parametrize("kill_after_lines", [1, 2, 3, 5, 8])
def test_kill_9_with_files_and_a_cache(kill_after_lines, client, emulator, emulator_env, tmp_path):
    write(tmp_path / "pipelines/crash.yaml", CACHED.replace("GUIDE", "Write plainly and briefly. " * 700))
    for name in ("a", "b"):
        (tmp_path / f"pipelines/{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode() * 9)
    write(
        tmp_path / "pipelines/data/in.jsonl",
        "".join(json.dumps({"id": i, "img": f"{'ab'[i % 2]}.png"}) + "\n" for i in range(5)),
    )
    env = {**os.environ, **emulator_env}
    kill_apply(env, kill_after_lines)
    apply_again(env)
    jobs = list(client.batches.list())
    assert len(jobs) == 3 and len({j.display_name for j in jobs}) == 3
    assert (
        len([f for f in client.files.list() if f.mime_type == "image/png"]) <= 2 + 1
    )  # a lost answer may cost one
    rows = [json.loads(line) for line in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [str(i) for i in range(5)]
    assert all("error" not in r and r["usage"]["cached_tokens"] > 0 for r in rows)
    assert list(client.caches.list()) == []  # one cache, adopted if need be, and deleted at the end


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_apply_says_its_jobs_go_on_and_a_rerun_resumes(
    sig, code, client, emulator, emulator_env, tmp_path
):
    _project(tmp_path, 4)
    emulator.store.clock.set_speed(1)  # the jobs are still at work when the signal comes
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchflow", "apply", "--wait"],
        env={**os.environ, **emulator_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    created = 0
    while created < 2:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        created += "created batches/" in line
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "the jobs created so far keep running on the service, and are paid for" in err
    assert "run `batchflow apply` again to resume" in err and "Traceback" not in err
    emulator.store.clock.set_speed(3600)
    apply_again({**os.environ, **emulator_env})
    assert len(list(client.batches.list())) == 2  # resumed, not sent again


def test_an_interrupt_a_library_wrapped_in_its_own_error_still_exits_as_an_interrupt(
    cli, emulator_env, tmp_path, monkeypatch
):
    """SIGINT landing inside pydantic's serializer comes out as a PydanticSerializationError
    (a ValueError): it is still an interrupt, with its exit code and no traceback."""
    import batchflow.api
    import batchflow.cli

    _project(tmp_path, 1)

    def interrupted_while_serializing(self):
        batchflow.cli._RECEIVED.append(signal.SIGINT)
        raise ValueError("Error serializing to JSON: KeyboardInterrupt: ")

    monkeypatch.setattr(batchflow.api.Project, "status", interrupted_while_serializing)
    monkeypatch.setattr(batchflow.cli, "_RECEIVED", [])
    done = cli("status")
    assert done.code == 130 and done.err.startswith("interrupted (SIGINT): nothing was lost")
