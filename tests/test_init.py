"""`batchflow init`: the scaffold's make targets work, run by two CI runners one after the other."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from batchflow import __version__


def test_init_writes_a_repo_and_leaves_existing_files_alone(cli, tmp_path):
    first = cli("init", "repo")
    assert first.code == 0, first.err
    repo = tmp_path / "repo"
    for name in (
        "batchflow.yaml",
        "pipelines/example.yaml",
        "pipelines/data/example.jsonl",
        "Makefile",
        ".github/workflows/batchflow.yml",
        ".gitlab-ci.yml",
        ".gitignore",
        ".env.example",
        "schemas/pipeline.schema.json",
    ):
        assert (repo / name).is_file(), name
    for workflow in (".github/workflows/batchflow.yml", ".gitlab-ci.yml"):
        yaml.safe_load((repo / workflow).read_text())  # valid YAML
    assert "secrets.GEMINI_API_KEY" in (repo / ".github/workflows/batchflow.yml").read_text()
    # "batchflow" on the package index is another project: install ours, pinned to this version.
    for workflow in (".github/workflows/batchflow.yml", ".gitlab-ci.yml"):
        text = (repo / workflow).read_text()
        installs = [line.strip() for line in text.splitlines() if "pip install" in line]
        assert installs and all(f'"gemini-batchflow=={__version__}"' in line for line in installs), installs
        assert "out" in text and ("actions/cache" in text or "cache:" in text)  # outputs outlive a runner
    # The project file names no state: in CI, apply refuses a checkout's folder.
    assert "state" not in yaml.safe_load((repo / "batchflow.yaml").read_text())
    assert cli("validate", str(repo / "pipelines")).code == 0
    (repo / "Makefile").write_text("# mine\n")
    again = cli("init", "repo")
    assert again.code == 0 and "Makefile: exists, left as it is" in again.out
    assert (repo / "Makefile").read_text() == "# mine\n"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_scaffold_runs_on_two_runners(cli, client, emulator, s3_bucket, tmp_path):
    assert cli("init", "repo").code == 0
    repo = tmp_path / "repo"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("BATCHFLOW_") and k != "GITHUB_STEP_SUMMARY"
    }
    env.update(
        BATCHFLOW=f"{sys.executable} -m batchflow",
        BATCHFLOW_API_BASE_URL=emulator.url,
        BATCHFLOW_STATE=f"s3://{s3_bucket}/batchflow",
        GEMINI_API_KEY="ci-secret",
    )

    def runner(name: str, *targets: str) -> str:
        # Each runner has its own cache: nothing is shared but the bucket.
        done = subprocess.run(
            ["make", "-C", str(repo), *targets],
            env={**env, "XDG_CACHE_HOME": str(tmp_path / name)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ci-secret" not in done.stdout + done.stderr
        return done.stdout

    emulator.store.clock.set_speed(1)  # the job is still at work when the first run ends
    first = runner("runner-1", "validate", "plan", "apply")
    assert "example: waiting for 1 job(s)" in first
    plan = json.loads((repo / "batchflow.plan").read_text())
    assert plan["pipelines"][0]["estimate"]["requests"] == 3
    emulator.store.clock.advance(3600)  # the job finishes between the scheduled runs
    second = runner("runner-2", "validate", "plan", "apply", "status")
    assert "example: done" in second
    rows = [json.loads(x) for x in (repo / "out/example.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["q1", "q2", "q3"]
    assert len(list(client.batches.list())) == 1  # one job, whichever runner looked
    third = runner("runner-1", "apply")
    assert "example: up to date, nothing to do" in third
