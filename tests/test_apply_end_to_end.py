"""`batchflow apply` through the CLI against the emulator, checked record by record."""

from __future__ import annotations

import json

import pytest
from conftest import write

SPEC = """
    version: 1
    name: tags
    model: gemini-3.8-flash
    source:
      uri: data/items.jsonl
      key: "{{ sku }}"
    request:
      system: You tag products.
      prompt: "Tag {{ title }}"
      generation_config:
        response_mime_type: application/json
        response_schema:
          type: OBJECT
          properties:
            tags: {type: ARRAY, items: {type: STRING}}
            score: {type: INTEGER, minimum: 1, maximum: 5}
          required: [tags, score]
    batch:
      max_requests: 3
    output:
      uri: out/tags.jsonl
"""


def _project(tmp_path, n: int = 7):
    write(tmp_path / "pipelines/tags.yaml", SPEC)
    items = [{"sku": f"S{i}", "title": f"item number {i}"} for i in range(n)]
    write(tmp_path / "pipelines/data/items.jsonl", "".join(json.dumps(i) + "\n" for i in items))
    return items


def _outputs(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "pipelines/out/tags.jsonl").read_text().splitlines()]


def test_apply_wait_produces_one_result_per_record(cli, client, emulator_env, tmp_path):
    items = _project(tmp_path)
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    rows = _outputs(tmp_path)
    assert [r["key"] for r in rows] == [i["sku"] for i in items]
    for row in rows:
        assert row["finish_reason"] == "STOP"
        assert set(row["json"]) == {"tags", "score"} and 1 <= row["json"]["score"] <= 5
        assert json.loads(row["text"]) == row["json"]
        assert row["usage"]["total_tokens"] == row["usage"]["prompt_tokens"] + row["usage"]["output_tokens"]
    # 7 records at 3 per job
    assert len(list(client.batches.list())) == 3


def test_second_apply_creates_nothing(cli, client, emulator_env, tmp_path):
    _project(tmp_path)
    assert cli("apply", "--wait").code == 0
    first = (tmp_path / "pipelines/out/tags.jsonl").read_bytes()
    jobs = {j.name for j in client.batches.list()}
    files = {f.name for f in client.files.list()}

    again = cli("apply")
    assert again.code == 0
    assert "up to date, nothing to do" in again.out
    assert {j.name for j in client.batches.list()} == jobs
    assert {f.name for f in client.files.list()} == files
    assert (tmp_path / "pipelines/out/tags.jsonl").read_bytes() == first


def test_plan_then_apply_then_plan(cli, emulator_env, tmp_path):
    _project(tmp_path)
    pending = cli("plan", "--detailed-exitcode")
    assert pending.code == 2
    assert "+ submit shard" in pending.out and "Plan:" in pending.out
    assert cli("apply", "--wait").code == 0
    settled = cli("plan", "--detailed-exitcode")
    assert settled.code == 0, settled.out
    assert "up to date" in settled.out


def test_growing_source_sends_only_new_records(cli, client, emulator_env, tmp_path):
    _project(tmp_path, n=3)
    assert cli("apply", "--wait").code == 0
    assert len(list(client.batches.list())) == 1
    _project(tmp_path, n=5)
    assert cli("apply", "--wait").code == 0
    jobs = list(client.batches.list())
    assert len(jobs) == 2
    assert len(_outputs(tmp_path)) == 5


def test_apply_without_wait_returns_while_jobs_run(cli, emulator, emulator_env, tmp_path):
    emulator.store.clock.set_speed(1)  # jobs now take realistic minutes
    _project(tmp_path, n=2)
    result = cli("apply")
    assert result.code == 0
    assert "waiting for 1 job(s)" in result.out
    status = cli("status", "--json")
    doc = json.loads(status.out)
    assert doc[0]["jobs"][0]["state"] in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING")
    emulator.store.clock.advance(3600)
    assert cli("apply").code == 0
    assert len(_outputs(tmp_path)) == 2


def test_status_before_and_after(cli, emulator_env, tmp_path):
    _project(tmp_path, n=2)
    assert "output: not written yet" in cli("status").out
    cli("apply", "--wait")
    out = cli("status").out
    assert "1 done" in out and "output: 2 records, 0 errors" in out
    assert "tokens: " in out and " prompt (0 cached), " in out
    tokens = json.loads(cli("status", "--json").out)[0]["tokens"]
    assert tokens["prompt"] > 0 and tokens["output"] > 0 and tokens["cached"] == 0


def test_missing_template_field_names_record_and_field(cli, emulator_env, tmp_path):
    _project(tmp_path, n=2)
    write(tmp_path / "pipelines/data/items.jsonl", '{"sku": "S0", "title": "ok"}\n{"sku": "S1"}\n')
    result = cli("apply")
    assert result.code == 1
    assert "items.jsonl:2" in result.err and "'S1'" in result.err and "title" in result.err
    assert "Traceback" not in result.err


def test_no_key_and_no_base_url_is_a_clear_error(cli, tmp_path):
    _project(tmp_path, n=1)
    result = cli("apply")
    assert result.code == 1
    assert "GEMINI_API_KEY" in result.err


def test_state_override_and_labels(cli, emulator_env, tmp_path):
    _project(tmp_path, n=2)
    spec = tmp_path / "pipelines/tags.yaml"
    spec.write_text(spec.read_text() + "state: ../team-state\nlabels: {team: catalog, cost-center: '42'}\n")
    assert cli("apply", "--wait").code == 0
    assert (tmp_path / "team-state/tags/state.json").exists()
    assert not (tmp_path / "state/tags").exists()
    out = cli("status").out
    assert "output: 2 records" in out and "labels: team=catalog, cost-center=42" in out
    assert json.loads(cli("status", "--json").out)[0]["labels"] == {"team": "catalog", "cost-center": "42"}


def test_duplicate_keys_are_found_across_chunks(cli, emulator_env, tmp_path):
    write(tmp_path / "pipelines/tags.yaml", SPEC)
    items = [{"sku": f"S{i}", "title": "t"} for i in range(600)] + [{"sku": "S10", "title": "again"}]
    write(tmp_path / "pipelines/data/items.jsonl", "".join(json.dumps(i) + "\n" for i in items))
    result = cli("plan")
    assert result.code == 1
    assert "items.jsonl:601: duplicate key 'S10'" in result.err


def test_bad_setting_is_one_line(cli, tmp_path):
    _project(tmp_path, n=1)
    result = cli("plan", env={"BATCHFLOW_POLL_INTERVAL": "soon"})
    assert result.code == 1
    assert result.err.startswith("error: BATCHFLOW_POLL_INTERVAL: ") and "Traceback" not in result.err


def test_output_with_brackets_is_printed_as_is(cli, tmp_path):
    _project(tmp_path, n=1)
    spec = tmp_path / "pipelines/tags.yaml"
    target = tmp_path / "pipelines/[bold]odd.yaml"
    spec.rename(target)
    result = cli("validate", str(target))
    assert result.code == 0 and "[bold]odd.yaml: tags: valid" in result.out


@pytest.mark.parametrize("model", ["gemini-3.8-flash", "gemini-4-argon"])
def test_todays_models_validate_silently_are_priced_and_run(cli, client, emulator_env, tmp_path, model):
    write(
        tmp_path / "pipelines/today.yaml",
        f"""
        version: 1
        name: today
        model: {model}
        source: {{uri: data.jsonl, key: "{{{{ id }}}}"}}
        request:
          prompt: "Say {{{{ word }}}}"
          generation_config: {{thinking_config: {{thinking_level: HIGH}}}}
        output: {{uri: out.jsonl}}
        """,
    )
    write(
        tmp_path / "pipelines/data.jsonl",
        "".join(json.dumps({"id": i, "word": f"w{i}"}) + "\n" for i in range(3)),
    )
    validated = cli("validate")
    assert validated.code == 0 and validated.err == ""
    planned = json.loads(cli("plan", "--json").out)["pipelines"][0]
    assert planned["estimate"]["usd"] > 0
    done = cli("apply", "--wait")
    assert done.code == 0, done.err
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["text"] for r in rows)


def test_a_misspelled_model_stops_plan_and_apply_before_any_upload(cli, client, emulator_env, tmp_path):
    write(
        tmp_path / "pipelines/typo.yaml",
        """
        version: 1
        name: typo
        model: gemini-3.8-flsh
        source: {uri: data.jsonl, key: "{{ id }}"}
        request: {prompt: "Say {{ id }}"}
        output: {uri: out.jsonl}
        """,
    )
    write(tmp_path / "pipelines/data.jsonl", '{"id": 1}\n')
    warned = cli("validate")
    assert warned.code == 0 and "did you mean 'gemini-3.8-flash'?" in warned.err
    said = "'gemini-3.8-flsh' is a model neither batchflow nor the service knows (models.get: 404)"
    for command in ("plan", "apply"):
        result = cli(command)
        assert result.code == 1 and said in result.err
    assert list(client.files.list()) == [] and list(client.batches.list()) == []
