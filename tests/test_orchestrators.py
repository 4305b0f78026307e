"""The orchestrator examples of docs/python.md: the Dagster asset runs here when Dagster is
installed (`pip install dagster`); the Airflow DAG is checked to be the one the guide shows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import project

EXAMPLES = Path(__file__).resolve().parents[1] / "docs/examples"

SPEC = """
    version: 1
    name: asked
    model: gemini-3.8-flash
    source: {uri: data.jsonl, key: "{{ id }}"}
    request: {prompt: "Say {{ word }}"}
    output: {uri: out.jsonl}
"""


def test_the_guide_shows_the_examples_as_they_are():
    guide = (EXAMPLES.parent / "python.md").read_text()
    for example in ("dagster_assets.py", "airflow_dag.py"):
        assert f"```python\n{(EXAMPLES / example).read_text()}```" in guide


def test_a_dagster_asset_applies_the_pipelines(emulator_env, tmp_path):
    dagster = pytest.importorskip("dagster")
    spec = importlib.util.spec_from_file_location("dagster_assets", EXAMPLES / "dagster_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    project(tmp_path, 3, spec=SPEC)

    def run(**config):
        config = {"paths": [str(tmp_path / "pipelines")], **config}
        return dagster.materialize(
            [module.batch_answers],
            run_config={"ops": {"batch_answers": {"config": config}}},
            raise_on_error=False,
        )

    refused = run(max_usd=0.000001)  # a budget error fails the run, and nothing is sent
    assert not refused.success and not (tmp_path / "pipelines/out.jsonl").exists()
    done = run()
    assert done.success
    (materialized,) = done.asset_materializations_for_node("batch_answers")
    assert materialized.metadata["asked"].data["records"] == 3
    assert len((tmp_path / "pipelines/out.jsonl").read_text().splitlines()) == 3
