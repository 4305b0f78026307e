"""The Python API: what plan and apply do, called from Python (as an orchestrator would)."""

from __future__ import annotations

import json

import pytest
from conftest import write

import batchflow

SPEC = """
    version: 1
    name: library
    model: gemini-3.8-flash
    source: {uri: data.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ word }}"}
    output: {uri: out.jsonl}
"""


def _project(tmp_path):
    write(tmp_path / "pipelines/library.yaml", SPEC)
    write(
        tmp_path / "pipelines/data.jsonl",
        "".join(json.dumps({"id": i, "word": f"w{i}"}) + "\n" for i in range(3)),
    )
    write(tmp_path / "pipelines/broken.yaml", "version: 1\nname: broken\n")


def test_load_plan_and_apply_from_python(client, emulator_env, tmp_path):
    _project(tmp_path)
    project = batchflow.load([tmp_path / "pipelines"], targets=None)
    assert [p.name for p in project.pipelines] == ["library"]
    assert project.problems and all("broken.yaml:1:1: " in problem for problem in project.problems)
    plan = project.plan(max_usd=5)
    assert plan.has_changes and plan.pipelines[0].estimate.requests == 3
    assert plan.options.max_usd == 5 and not plan.pipelines[0].over_budget
    result = project.apply(wait=True)
    assert not result.ok and result.problems  # the spec that did not load is still a problem
    assert result.errors == {} and result.failed == {}
    assert len((tmp_path / "pipelines/out.jsonl").read_text().splitlines()) == 3
    again = batchflow.load([tmp_path / "pipelines/library.yaml"])
    assert not again.plan().has_changes and again.apply().ok


def test_a_budget_and_an_unknown_target_from_python(client, emulator_env, tmp_path):
    _project(tmp_path)
    with pytest.raises(batchflow.BatchflowError, match="--target nope: no such pipeline"):
        batchflow.load([tmp_path / "pipelines"], targets=["nope"])
    project = batchflow.load([tmp_path / "pipelines/library.yaml"], targets=["library"])
    assert project.plan(max_usd=0.000001).pipelines[0].over_budget
    refused = project.apply(max_usd=0.000001)
    assert not refused.ok and "over the budget" in refused.errors["library"]
    with pytest.raises(batchflow.BudgetError, match="over the budget"):  # caught by its kind
        refused.raise_for_errors()
    assert list(client.batches.list()) == []
    assert project.apply(wait=True).raise_for_errors().ok


def test_status_from_python(client, emulator_env, tmp_path):
    _project(tmp_path)
    project = batchflow.load([tmp_path / "pipelines/library.yaml"])
    assert project.apply(wait=True).ok
    (row,) = project.status()
    assert row["pipeline"] == "library" and row["records"] == 3 and row["requests"] == 3
    assert (
        row["output"]["records"] == 3
        and row["cost_usd"] > 0
        and row["jobs"][0]["name"].startswith("batches/")
    )


def test_validate_cancel_unlock_and_destroy_from_python(client, emulator, emulator_env, tmp_path):
    _project(tmp_path)
    with pytest.raises(batchflow.SpecErrors) as refused:
        batchflow.load([tmp_path / "pipelines"], strict=True)
    assert refused.value.errors[0].field == "model" and refused.value.errors[0].file.endswith("broken.yaml")
    project = batchflow.load([tmp_path / "pipelines/library.yaml"], strict=True)
    (checked,) = project.validate().values()
    assert checked.records == 3 and checked.complete
    write(tmp_path / "pipelines/data.jsonl", '{"id": 1, "word": "a"}\n{"id": 1, "word": "b"}\n')
    with pytest.raises(batchflow.SpecErrors, match=r"data.jsonl:2: .*1"):
        project.validate()
    write(tmp_path / "pipelines/data.jsonl", '{"id": 1, "word": "a"}\n')

    emulator.store.clock.set_speed(0)  # the job stays running until cancelled
    assert project.apply().ok and project.unlock() == {"library": False}
    said = []
    assert project.cancel(lambda pipeline, message: said.append(message)) == 1
    assert said[0].startswith("cancelled batches/")
    project.destroy(lambda pipeline, message: said.append(message))
    assert said[-1] == "removed its state" and list(client.batches.list()) == []
