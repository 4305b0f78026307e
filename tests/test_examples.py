"""The example pipelines: together they use every section of the spec, and they all run."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel

from batchflow.spec.loader import load_pipelines
from batchflow.spec.models import Pipeline
from batchflow.spec.yamlsource import load_documents

EXAMPLES = Path(__file__).resolve().parent.parent / "pipelines/examples"


def _model_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of every field of the spec that is a section (a nested model)."""
    paths = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.add(path)
        for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                paths |= _model_paths(arg, path + ".")
    return paths


def _used_paths(data, prefix: str = "") -> set[str]:
    paths = set()
    if isinstance(data, dict):
        for key, value in data.items():
            paths.add(f"{prefix}{key}")
            paths |= _used_paths(value, f"{prefix}{key}.")
    elif isinstance(data, list):
        for item in data:
            paths |= _used_paths(item, prefix)
    return paths


def test_examples_use_every_field_of_the_spec():
    used: set[str] = set()
    for spec in EXAMPLES.glob("*.yaml"):
        for doc in load_documents(spec.read_text(), str(spec), env={}):
            used |= _used_paths(doc.data)
    # Fields with a sensible default that an example need not show, and alternatives to ones shown.
    optional = {
        "state",
        "source.csv.quotechar",
        "source.csv.encoding",
        "request.generation_config.response_json_schema",
        "request.generation_config.thinking_config.thinking_level",
        "request.generation_config.thinking_config.include_thoughts",
        "embed.title",
        "cache.contents",
        "request.generation_config.top_k",
        "request.generation_config.top_p",
        "request.generation_config.candidate_count",
        "request.generation_config.stop_sequences",
        "request.generation_config.seed",
        "request.generation_config.presence_penalty",
        "request.generation_config.frequency_penalty",
        "output.format",
        "tools.functions",
        # The vertex backend needs Cloud Storage, which `make demo` does not run;
        # tests/test_emulator_vertex.py runs a pipeline on it.
        "backend",
        "batch.staging",
        # qa-eval is graded by a judge; the metrics, its alternative, run in tests/test_evals.py.
        "score.metric",
        "score.case_sensitive",
        "score.trim",
        "score.tolerance",
    }
    missing = sorted(_model_paths(Pipeline) - used - optional)
    assert not missing, f"no example pipeline uses: {missing}"


def test_every_example_runs_on_the_emulator(cli, emulator_env, tmp_path):
    shutil.copytree(EXAMPLES.parent, tmp_path / "pipelines")
    result = cli("apply", "--wait", "pipelines/examples")
    assert result.code == 0, result.err
    loaded = load_pipelines([EXAMPLES])  # a matrix is a pipeline per variant and judge, and its group
    assert result.out.count(": done") == len(loaded) + len({p.member.group for p in loaded if p.member})
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "image-captions.parquet" in outputs and "support-replies.csv" in outputs


def test_readme_spec_is_the_shipped_example():
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    name, block = re.search(r"```yaml\n# (\S+)\n(.*?)```", readme, re.S).groups()
    assert name == "pipelines/examples/quickstart.yaml"
    assert block == (EXAMPLES / "quickstart.yaml").read_text()  # validated and run with the others


def test_readme_lists_every_command():
    import re

    import typer.main

    from batchflow.cli import app

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = re.search(r"## Commands\n\n(.*?)\n\n", readme, re.S).group(1)
    documented = set(re.findall(r"^\| `batchflow (\w+)", table, re.M))
    commands = set(typer.main.get_command(app).commands)
    assert documented == commands
