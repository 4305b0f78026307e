"""apply against an emulator that fails: jobs fail, files vanish, calls are refused."""

from __future__ import annotations

import json

import httpx2 as httpx
from conftest import project

from batchflow.state.store import LocalStore, ShardStatus

SPEC = """
    version: 1
    name: faulty
    model: gemini-3.8-flash
    source: {uri: data/in.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ word }}"}
    batch: {max_requests: 2}
    retry: {attempts: 3}
    output: {uri: out.jsonl}
"""


def _project(tmp_path, n=3):
    project(tmp_path, n, spec=SPEC, spec_file="faulty.yaml", data="data/in.jsonl")


def _faults(emulator, **values):
    httpx.post(f"{emulator.url}/_emulator/faults", json=values).raise_for_status()


def _rows(tmp_path):
    return [json.loads(line) for line in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]


def test_failed_jobs_are_resubmitted_until_attempts_run_out(cli, client, emulator, emulator_env, tmp_path):
    _project(tmp_path, 2)
    _faults(emulator, job_fail_rate=1.0)
    result = cli("apply", "--wait")
    assert result.code == 3, result.err  # every request failed: beyond the default errors policy
    assert "faulty: error: 2 of 2 requests failed" in result.err
    jobs = list(client.batches.list())
    assert len(jobs) == 3 and {j.state.name for j in jobs} == {"JOB_STATE_FAILED"}
    assert len({j.display_name for j in jobs}) == 3  # one per attempt
    rows = _rows(tmp_path)
    assert [r["key"] for r in rows] == ["0", "1"]
    # The service's own code, status and message, and which job it was.
    last = jobs[0].name if jobs[0].create_time >= jobs[-1].create_time else jobs[-1].name
    assert {json.dumps(r["error"]) for r in rows} == {
        json.dumps(
            {
                "code": 13,
                "status": "INTERNAL",
                "message": f"Batch job failed: internal error. (job {last} ended failed)",
            }
        )
    }
    assert "queued again (attempt 3 of 3)" in result.out
    again = cli("apply")
    assert again.code == 3 and "up to date" in again.out  # a re-run does not hide the failure
    status = cli("status")
    assert "2 errors" in status.out and "failed keys: 0, 1" in status.out
    assert "faulty: 2 records; 6 requests sent" in status.out  # 2 records, each sent in 3 jobs
    assert "Batch job failed: internal error." in status.out


def test_raising_attempts_sends_failed_requests_again_and_rewrites_the_output(
    cli, emulator, emulator_env, tmp_path
):
    _project(tmp_path, 2)
    spec = tmp_path / "pipelines/faulty.yaml"
    spec.write_text(spec.read_text().replace("attempts: 3", "attempts: 1"))
    _faults(emulator, job_fail_rate=1.0)
    assert cli("apply", "--wait").code == 3
    assert all("error" in r for r in _rows(tmp_path))
    _faults(emulator, job_fail_rate=0.0)
    spec.write_text(spec.read_text().replace("attempts: 1", "attempts: 2"))
    plan = cli("plan", "--detailed-exitcode")
    assert plan.code == 2 and "resubmit (attempt 2 of 2)" in plan.out
    result = cli("apply", "--wait")
    assert result.code == 0, result.out + result.err
    rows = _rows(tmp_path)
    assert [r["key"] for r in rows] == ["0", "1"] and all("error" not in r for r in rows)
    assert "0 errors" in cli("status").out
    assert cli("plan", "--detailed-exitcode").code == 0


def test_the_errors_policy_tolerates_what_it_says(cli, emulator, emulator_env, tmp_path):
    _project(tmp_path, 4)
    spec = tmp_path / "pipelines/faulty.yaml"
    spec.write_text(spec.read_text().replace("attempts: 3", "attempts: 1") + "errors: {max_count: 4}\n")
    _faults(emulator, line_error_rate=0.5, seed=7)
    result = cli("apply", "--wait")
    failed = sum("error" in r for r in _rows(tmp_path))
    assert 0 < failed < 4 and result.code == 0, result.err
    spec.write_text(spec.read_text().replace("errors: {max_count: 4}", "errors: {max_rate: 0.1}"))
    result = cli("apply")
    assert result.code == 3 and f"{failed} of 4 requests failed" in result.err
    assert "over errors.max_rate 0.1" in result.err


def test_a_failed_job_is_retried_and_then_succeeds(cli, client, emulator, emulator_env, tmp_path):
    _project(tmp_path, 2)
    _faults(emulator, job_fail_rate=1.0)
    emulator.store.clock.set_speed(1)  # the job stays pending while apply returns
    assert cli("apply").code == 0
    (job,) = client.batches.list()
    emulator.store.clock.advance(3600)  # past the job's end: reading it now settles it as FAILED
    assert client.batches.get(name=job.name).state.name == "JOB_STATE_FAILED"
    _faults(emulator, job_fail_rate=0.0)
    emulator.store.clock.set_speed(3600)
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert "queued again (attempt 2 of 3)" in result.out
    assert all("error" not in r for r in _rows(tmp_path))


def test_expired_upload_is_uploaded_again(cli, client, emulator, emulator_env, tmp_path):
    _project(tmp_path, 2)
    emulator.store.clock.set_speed(1)
    assert cli("apply").code == 0
    store = LocalStore(emulator_env["BATCHFLOW_STATE"])
    state = store.load("faulty")
    (shard,) = state.shards.values()
    client.batches.delete(name=shard.job_name)
    client.files.delete(name=shard.file_name)  # as the service does after 48 hours
    old_file = shard.file_name
    shard.status, shard.job_name, shard.job_state = ShardStatus.UPLOADED, None, None
    store.save(state)
    emulator.store.clock.set_speed(3600)

    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert store.load("faulty").shards[shard.id].file_name != old_file
    assert len(_rows(tmp_path)) == 2


def test_rate_limits_and_outages_are_ridden_out_with_wait(cli, client, emulator, emulator_env, tmp_path):
    _project(tmp_path, 4)
    _faults(emulator, rate_limit_rate=0.3, unavailable_rate=0.1, seed=7)
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    _faults(emulator, rate_limit_rate=0.0, unavailable_rate=0.0)
    assert len(list(client.batches.list())) == 2  # no duplicate job despite refused calls
    assert all("error" not in r for r in _rows(tmp_path))


def test_without_wait_a_refused_call_is_one_line_and_exit_1(cli, emulator, emulator_env, tmp_path):
    _project(tmp_path, 1)
    _faults(emulator, unavailable_rate=1.0)
    result = cli("apply", env={"BATCHFLOW_HTTP_ATTEMPTS": "1"})
    assert result.code == 1
    assert result.err.startswith("faulty: error: ") and "503" in result.err
    assert "Traceback" not in result.err
    _faults(emulator, unavailable_rate=0.0)
    assert cli("apply", "--wait").code == 0


def test_retry_errors_sends_failed_jobs_and_failed_lines_again_once(
    cli, client, emulator, emulator_env, tmp_path
):
    _project(tmp_path, 4)
    spec = tmp_path / "pipelines/faulty.yaml"
    spec.write_text(spec.read_text().replace("attempts: 3", "attempts: 1"))
    # One job fails; the other's lines fail (seeded so that both happen).
    _faults(emulator, job_fail_rate=0.5, line_error_rate=1.0, seed=2)
    assert cli("apply", "--wait").code == 3
    rows = _rows(tmp_path)
    assert {r["error"]["code"] for r in rows} == {13, 500}  # a failed job's rows, and failed lines
    jobs = len(list(client.batches.list()))
    # Still failing: --retry-errors sends each failed request once more, then stops (exit 3 again).
    plan = cli("plan", "--retry-errors")
    assert "submit 4 new requests" in plan.out or "submit 2 new requests" in plan.out, plan.out
    assert cli("plan", "--detailed-exitcode").code == 0  # without the flag: nothing to do
    assert cli("apply", "--wait", "--retry-errors").code == 3
    second = len(list(client.batches.list()))
    assert second > jobs
    assert cli("apply", "--wait").code == 3 and len(list(client.batches.list())) == second
    # The service recovers: one more --retry-errors and every row is an answer.
    _faults(emulator, job_fail_rate=0.0, line_error_rate=0.0)
    result = cli("apply", "--wait", "--retry-errors")
    assert result.code == 0, result.out + result.err
    rows = _rows(tmp_path)
    assert [r["key"] for r in rows] == ["0", "1", "2", "3"] and all("error" not in r for r in rows)
    assert cli("apply", "--retry-errors").code == 0  # nothing failed: nothing is sent
    assert "up to date" in cli("plan", "--retry-errors").out


def test_retry_errors_sends_blocked_prompts_and_safety_stops_again(
    cli, client, emulator, emulator_env, tmp_path
):
    """A blocked prompt or an answer stopped for safety is an error row; the service may answer
    it when asked again, so --retry-errors sends it again, as docs/running.md says."""
    _project(tmp_path, 12)
    _faults(emulator, prompt_block_rate=0.3, safety_stop_rate=0.3, seed=1)
    assert cli("apply", "--wait").code == 3
    failed = {r["key"] for r in _rows(tmp_path) if "error" in r}
    assert failed and any(r["error"]["status"] == "BLOCKED" for r in _rows(tmp_path) if "error" in r)
    plan = cli("plan", "--retry-errors")
    assert f"= estimate: {len(failed)} requests" in plan.out, plan.out
    _faults(emulator, prompt_block_rate=0.0, safety_stop_rate=0.0)
    result = cli("apply", "--wait", "--retry-errors")
    assert result.code == 0, result.out + result.err
    rows = _rows(tmp_path)
    assert len(rows) == 12 and all("error" not in r for r in rows)
    assert "up to date" in cli("plan", "--retry-errors").out


def test_jobs_the_spec_no_longer_wants_are_cancelled_not_paid_for(
    cli, client, emulator, emulator_env, tmp_path
):
    """Jobs for one model run; the spec moves to another. Plan says the old jobs are superseded and
    what they would still cost; apply cancels them (they hold no job slot) and sends the new ones."""
    emulator.store.clock.set_speed(1)  # the first jobs stay at work
    _project(tmp_path, 4)
    assert cli("apply").code == 0
    old_jobs = {j.name for j in client.batches.list()}
    assert len(old_jobs) == 2
    spec = tmp_path / "pipelines/faulty.yaml"
    spec.write_text(spec.read_text().replace("gemini-3.8-flash", "gemini-2.5-flash-lite"))
    plan = cli("plan")
    assert plan.out.count("- cancel shard") == 2, plan.out
    assert "superseded, none of its 2 requests is in the spec now" in plan.out
    assert "4 requests in flight no longer match the spec: apply cancels them before they spend ~$0.0" in (
        plan.out
    )
    applied = cli("apply", "--max-concurrent-jobs", "2")
    assert applied.code == 0, applied.err
    assert applied.out.count(": superseded, none of its 2 requests") == 2
    assert "waiting for a job slot" not in applied.out
    emulator.store.clock.advance(60)  # the service takes a moment to act on a cancel
    jobs = {j.name: j for j in client.batches.list()}
    assert len(jobs) == 4
    assert all(jobs[name].state.name == "JOB_STATE_CANCELLED" for name in old_jobs)
    emulator.store.clock.set_speed(3600)
    done = cli("apply", "--wait")
    assert done.code == 0, done.out + done.err
    assert len(list(client.batches.list())) == 4  # nothing more was sent
    rows = _rows(tmp_path)
    assert [r["key"] for r in rows] == ["0", "1", "2", "3"] and all("error" not in r for r in rows)
    assert "up to date" in cli("plan").out
