"""cancel stops spending; destroy removes what a pipeline made. Both through the CLI."""

from __future__ import annotations

import functools
import json

from conftest import project, write

SPEC = """
    version: 1
    name: p
    model: gemini-3.8-flash
    source: {uri: data.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ id }}"}
    output: {uri: out.jsonl}
"""


_project = functools.partial(project, spec=SPEC)


def test_cancel_then_apply_collects_partial_results_and_sends_the_rest(
    cli, client, emulator, emulator_env, tmp_path
):
    _project(tmp_path, 1000)
    emulator.store.clock.set_speed(1)
    assert "waiting for 1 job" in cli("apply").out
    emulator.store.clock.advance(30 + 55)  # about half way through the job
    result = cli("cancel")
    assert result.code == 0 and "1 job(s) cancelled" in result.out
    emulator.store.clock.advance(10)
    emulator.store.clock.set_speed(3600)
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    jobs = list(client.batches.list())
    assert sorted(j.state.name for j in jobs) == ["JOB_STATE_CANCELLED", "JOB_STATE_SUCCEEDED"]
    second = next(j for j in jobs if j.state.name == "JOB_STATE_SUCCEEDED")
    resent = emulator.store.get_job(second.name.removeprefix("batches/")).request_count
    assert 0 < resent < 1000  # only what the cancelled job had not answered
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert len(rows) == 1000 and all("error" not in r for r in rows)
    assert "no running jobs" in cli("cancel").out


def test_destroy_removes_jobs_files_cache_and_state_but_keeps_outputs(cli, client, emulator_env, tmp_path):
    _project(tmp_path, 3)
    assert cli("apply", "--wait").code == 0
    assert list(client.batches.list()) and list(client.files.list())
    result = cli("destroy", "--yes")
    assert result.code == 0, result.err
    assert list(client.batches.list()) == [] and list(client.files.list()) == []
    assert not (tmp_path / "state/p").exists()
    assert (tmp_path / "pipelines/out.jsonl").exists()
    assert "output: not written yet" in cli("status").out
    assert cli("apply", "--wait").code == 0  # starts again from nothing


def test_destroy_asks_for_yes_when_not_at_a_terminal(cli, emulator_env, tmp_path, monkeypatch):
    import io

    _project(tmp_path, 1)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    result = cli("destroy")
    assert result.code == 1 and "--yes" in result.err


def test_destroy_finds_what_a_killed_apply_made_but_never_named(
    cli, client, emulator, emulator_env, tmp_path
):
    """A kill -9 just as the cache appeared: the state names neither the cache, nor the file it
    was made of, nor the shard's upload. destroy finds them by their names, as apply would."""
    from batchflow.state.store import LocalStore, ShardStatus

    guide = "House style: short sentences, plain words, no hype. " * 400
    write(tmp_path / "pipelines/guide.txt", guide)
    write(tmp_path / "pipelines/data.jsonl", "".join(json.dumps({"id": i}) + "\n" for i in range(3)))
    write(
        tmp_path / "pipelines/p.yaml",
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        source: {uri: data.jsonl, key: "{{ id }}"}
        request: {prompt: "Say {{ id }}"}
        cache: {files: [guide.txt], ttl: 2h}
        output: {uri: out.jsonl}
        """,
    )
    emulator.store.clock.set_speed(1)
    assert cli("apply").code == 0
    assert list(client.caches.list()) and len(list(client.files.list())) == 2
    store = LocalStore(emulator_env["BATCHFLOW_STATE"])
    state = store.load("p")
    (shard,) = state.shards.values()
    client.batches.delete(name=shard.job_name)  # killed before the create, in fact
    state.cache.name = None
    for blob in state.blobs.values():
        blob.name = blob.uri = None
    shard.status, shard.file_name, shard.job_name, shard.job_state = ShardStatus.PREPARED, None, None, None
    store.save(state)

    result = cli("destroy", "--yes")
    assert result.code == 0, result.err
    assert result.out.count("deleted file files/") == 2 and "deleted cache cachedContents/" in result.out
    assert list(client.caches.list()) == [] and list(client.files.list()) == []
