"""Leased locks: renewed while apply runs, taken over once expired from any host, fenced writes."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import fsspec
import pytest
from conftest import kill_apply, project, stopped

from batchflow.errors import LockedError, StateError
from batchflow.state import lease as leases
from batchflow.state.store import LocalStore, PipelineState, RemoteStore

SPEC = """
    version: 1
    name: leased
    model: gemini-3.8-flash
    source: {uri: data.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ id }}"}
    batch: {max_requests: 2}
    output: {uri: out.jsonl}
"""


@pytest.fixture(params=["local", "s3", "gs"])
def state_location(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "state")
    bucket = request.getfixturevalue("s3_bucket" if request.param == "s3" else "gcs_bucket")
    return f"{request.param}://{bucket}/state"


_project = functools.partial(project, spec=SPEC)


def _lock_path(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, base = fsspec.core.url_to_fs(location)
    return fs, f"{base}/leased/lock"


def _move_lock_to_another_host(location: str) -> dict:
    """The killed apply's lock, as if its holder ran on another CI runner: its pid says nothing here."""
    fs, path = _lock_path(location)
    lease = json.loads(fs.cat_file(path))
    lease["host"] = "ci-runner-7"
    fs.pipe_file(path, json.dumps(lease).encode())
    return lease


def test_a_killed_apply_elsewhere_is_taken_over_once_its_lease_expires(
    client, emulator_env, state_location, tmp_path
):
    _project(tmp_path)
    env = {
        **os.environ,
        **emulator_env,
        "BATCHFLOW_STATE": state_location,
        "BATCHFLOW_LOCK_TTL": "3s",
        "XDG_CACHE_HOME": str(tmp_path / "runner-one"),
    }
    kill_apply(env, after_lines=3)
    lease = _move_lock_to_another_host(state_location)
    refused = subprocess.run(
        [sys.executable, "-m", "batchflow", "apply"], env=env, capture_output=True, text=True, timeout=60
    )
    env["XDG_CACHE_HOME"] = str(tmp_path / "runner-two")
    done = subprocess.run(
        [sys.executable, "-m", "batchflow", "apply", "--wait", "--lock-timeout", "30s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if refused.returncode == 1:  # within the lease, another apply keeps off, and the next waits
        assert "lease until" in refused.stderr, refused.stderr
        assert "took over the lock: the lease of pid" in done.stdout and "on ci-runner-7" in done.stdout
        assert time.time() > lease["expires"]
    else:  # a slow machine: the lease had already expired
        assert "took over the lock: the lease of pid" in refused.stdout, refused.stdout + refused.stderr
    jobs = list(client.batches.list())
    assert len(jobs) == 3 and len({j.display_name for j in jobs}) == 3  # no duplicate job
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [str(i) for i in range(5)] and all("error" not in r for r in rows)
    fs, path = _lock_path(state_location)
    assert not fs.exists(path)


def test_a_live_lease_stops_apply_and_lock_timeout_waits_for_it(cli, emulator_env, tmp_path):
    _project(tmp_path, 2)
    lock = tmp_path / "state/leased/lock"
    lock.parent.mkdir(parents=True)
    lease = {"owner": "o", "host": "ci-runner-7", "pid": 1, "acquired": "t", "expires": time.time() + 1.5}
    lock.write_text(json.dumps(lease))
    held = cli("apply")
    assert held.code == 1 and "locked by another apply (pid 1 on ci-runner-7 since t, lease until" in held.err
    waited = cli("apply", "--wait", "--lock-timeout", "20s")
    assert waited.code == 0, waited.err
    assert "took over the lock: the lease of pid 1 on ci-runner-7" in waited.out
    bad = cli("apply", "--lock-timeout", "soon")
    assert (
        bad.code == 1
        and bad.err.startswith("error: --lock-timeout: ")
        and "invalid duration 'soon'" in bad.err
    )


def test_the_heartbeat_renews_the_lease_while_the_holder_works(tmp_path):
    store, other = LocalStore(tmp_path), LocalStore(tmp_path)
    store.lock_ttl = 0.6
    with store.lock("p"):
        time.sleep(1.5)  # more than two lease lengths
        lease = json.loads((tmp_path / "p/lock").read_text())
        assert lease["expires"] > time.time()
        with pytest.raises(LockedError), other.lock("p"):
            pass
    assert not (tmp_path / "p/lock").exists()


def _store(location: str, tmp_path, name: str) -> LocalStore:
    if "://" in location:
        return RemoteStore(location, mirror=tmp_path / name)
    return LocalStore(location)


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The leases' clock, moved by hand: `clock[0] += 60` runs a minute of leases out at once."""
    now = [time.time()]
    monkeypatch.setattr(leases, "clock", lambda: now[0])
    return now


def test_a_holder_that_lost_its_lease_cannot_write(state_location, tmp_path, clock):
    paused, other = _store(state_location, tmp_path, "a"), _store(state_location, tmp_path, "b")
    paused.lock_ttl = other.lock_ttl = 60
    taken: list[str] = []
    with paused.lock("leased"):
        paused.save(PipelineState(pipeline="leased", records=1))
        held = paused._leases["leased"]
        held._stop.set()  # the VM pauses: no more heartbeats
        held._thread.join()
        clock[0] += 61
        with pytest.raises(StateError, match="expired"):  # it notices its own lease ran out
            paused.save(PipelineState(pipeline="leased", records=2))
        with other.lock("leased", taken.append):
            other.save(PipelineState(pipeline="leased", records=3))
            # The paused holder wakes up believing its lease is still good (a clock that
            # stood still): only the conditional write of a bucket's state.json stops it.
            held.lease = held.lease.renewed(60)
            if "://" in state_location:
                with pytest.raises(StateError, match="changed since this apply read it"):
                    paused.save(PipelineState(pipeline="leased", records=4))
            held.lost = "lost"
        assert taken and "expired" in taken[0]
    assert other.load("leased").records == 3
    fs, path = _lock_path(state_location)
    assert not fs.exists(path)  # released by its holder; the paused one deleted nothing


def test_two_contenders_for_an_expired_lease_one_wins(tmp_path):
    lock = tmp_path / "p/lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"owner": "o", "host": "gone", "pid": 1, "acquired": "t", "expires": 0}))
    results: list[str] = []
    barrier = threading.Barrier(4)

    def contend() -> None:
        store = LocalStore(tmp_path)
        barrier.wait()
        try:
            with store.lock("p"):
                results.append("won")
                time.sleep(0.5)
        except LockedError:
            results.append("locked")

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["locked", "locked", "locked", "won"]


@pytest.mark.parametrize("stall", ["create", "upload"])
def test_a_runner_paused_past_its_lease_never_calls_the_service_again(client, emulator_env, tmp_path, stall):
    """Runner A stops (SIGSTOP) right before a create or upload; its lease runs out; runner B takes
    over and finishes; A resumes (SIGCONT). The service must hold one job and one upload only."""
    _project(tmp_path, 2)  # one shard
    env = {**os.environ, **emulator_env, "BATCHFLOW_LOCK_TTL": "2s"}
    a = subprocess.Popen(
        [sys.executable, "-m", "batchflow", "apply", "--wait"],
        env={**env, "BATCHFLOW_TEST_STALL_BEFORE": stall},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not stopped(a.pid):
            assert a.poll() is None and time.monotonic() < deadline, a.stdout.read()
            time.sleep(0.05)
        b = subprocess.run(
            [sys.executable, "-m", "batchflow", "apply", "--wait", "--lock-timeout", "30s"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert b.returncode == 0, b.stdout + b.stderr
        assert "took over the lock: the lease of pid" in b.stdout
    finally:
        a.send_signal(signal.SIGCONT)
    out, _ = a.communicate(timeout=60)
    assert a.returncode == 1, out
    assert "lost its lock" in out
    assert {"create": "created batches/", "upload": "uploaded as"}[stall] not in out
    jobs = list(client.batches.list())
    assert len(jobs) == 1, [j.name for j in jobs]
    uploads = [f for f in client.files.list() if f.display_name and "leased" in f.display_name]
    assert len(uploads) <= 1
    assert len((tmp_path / "pipelines/out.jsonl").read_text().splitlines()) == 2
