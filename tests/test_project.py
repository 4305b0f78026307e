"""Where state lives: anchored to the project (batchflow.yaml) or the spec, never the current folder."""

from __future__ import annotations

import json

import pytest
from conftest import write

SPEC = """
    version: 1
    name: anchored
    model: gemini-3.8-flash
    source: {uri: data/q.jsonl, key: "{{ id }}"}
    request: {prompt: "{{ q }}"}
    output: {uri: out.jsonl}
"""


@pytest.fixture
def project(tmp_path, emulator_env, monkeypatch):
    """A repository with one pipeline, and no BATCHFLOW_STATE: the default decides."""
    monkeypatch.delenv("BATCHFLOW_STATE")
    write(tmp_path / "repo/pipelines/anchored.yaml", SPEC)
    write(
        tmp_path / "repo/pipelines/data/q.jsonl",
        "".join(json.dumps({"id": i, "q": i}) + "\n" for i in range(3)),
    )
    return tmp_path / "repo"


def test_without_a_project_file_state_sits_in_the_spec_folder(cli, project, monkeypatch):
    monkeypatch.chdir(project)
    assert cli("apply", "--wait").code == 0
    assert (project / "pipelines/.batchflow/anchored/state.json").is_file()
    # From another folder, with the spec named by a relative or an absolute path: the same state.
    monkeypatch.chdir(project / "pipelines")
    plan = cli("plan", "--detailed-exitcode", "anchored.yaml")
    assert plan.code == 0 and "up to date" in plan.out
    monkeypatch.chdir(project.parent)
    assert cli("plan", "--detailed-exitcode", str(project / "pipelines")).code == 0


def test_the_project_file_sets_the_state_and_the_default_paths(cli, project, monkeypatch):
    write(project / "batchflow.yaml", "version: 1\nstate: var/state\npipelines: [pipelines]\n")
    (project / "deep/down").mkdir(parents=True)
    monkeypatch.chdir(project / "deep/down")
    result = cli("apply", "--wait")  # no paths: the project's pipelines, found from here
    assert result.code == 0, result.err
    assert (project / "var/state/anchored/state.json").is_file()
    assert not (project / "deep/down/.batchflow").exists()
    monkeypatch.chdir(project / "pipelines")
    assert "up to date" in cli("plan").out
    assert cli("validate").code == 0  # batchflow.yaml is not taken for a pipeline spec


def test_a_second_empty_state_is_refused(cli, project, monkeypatch):
    # State made where batchflow 0.1 put it by default: .batchflow/ in the folder it ran from.
    monkeypatch.chdir(project)
    assert cli("apply", "--wait", "--state", ".batchflow").code == 0
    write(project / "batchflow.yaml", "version: 1\nstate: elsewhere\n")
    plan = cli("plan", "pipelines")
    assert plan.code == 1
    assert f"no state in {project / 'elsewhere'}, but {project / '.batchflow'} holds" in plan.err
    assert "Traceback" not in plan.err
    assert cli("apply", "pipelines").code == 1
    assert not (project / "elsewhere").exists()  # nothing was started there


def test_a_bad_project_file_is_one_line(cli, project, monkeypatch):
    write(project / "batchflow.yaml", "version: 1\nstate: [a, b]\n")
    monkeypatch.chdir(project / "pipelines")
    result = cli("plan")
    assert result.code == 1
    assert result.err.strip().startswith(f"{project / 'batchflow.yaml'}:2:1: state:")
    assert len(result.err.strip().splitlines()) == 1


def test_an_empty_batchflow_state_is_an_error(cli, project, monkeypatch):
    """An unset CI variable expands to an empty string; it must not mean "the default"."""
    monkeypatch.chdir(project)
    for command in ("plan", "apply"):
        result = cli(command, env={"BATCHFLOW_STATE": ""})
        assert result.code == 1
        assert result.err.strip().splitlines() == [
            "error: BATCHFLOW_STATE: is set but empty; name a folder or a gs:// or s3:// URL, or unset it"
        ]
    assert not (project / "pipelines/.batchflow").exists()


@pytest.mark.parametrize("ci", [{"CI": "true"}, {"GITHUB_ACTIONS": "true"}, {"GITLAB_CI": "true"}])
def test_apply_in_ci_refuses_a_state_nobody_named(cli, client, project, monkeypatch, ci):
    monkeypatch.chdir(project)
    refused = cli("apply", env=ci)
    assert refused.code == 1
    assert "in CI, this apply would keep the state of 'anchored' in" in refused.err
    assert "Name a state: BATCHFLOW_STATE" in refused.err and "Traceback" not in refused.err
    assert list(client.batches.list()) == [] and not (project / "pipelines/.batchflow").exists()
    assert cli("plan", env=ci).code == 0  # a plan sends nothing: it may read the default
    # Named in the project file (even inside the checkout, on purpose): apply goes ahead.
    write(project / "batchflow.yaml", "state: ci-state\n")
    done = cli("apply", "--wait", env=ci)
    assert done.code == 0, done.err
    assert (project / "ci-state/anchored/state.json").is_file()
