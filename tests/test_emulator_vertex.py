"""The emulator's Vertex AI surface: batch prediction jobs through the unmodified SDK with
`vertexai=True`, reading and writing Cloud Storage (fake-gcs-server). Shapes from
docs/vertex.md."""

from __future__ import annotations

import json

import gcsfs
import pytest
from google import genai
from google.genai import errors
from google.oauth2.credentials import Credentials


@pytest.fixture
def vertex(emulator, gcs_endpoint):
    emulator.store.gcs_endpoint, emulator.store.gcs = gcs_endpoint, None
    return genai.Client(
        vertexai=True,
        project="my-project",
        location="us-central1",
        credentials=Credentials(token="any-token"),
        http_options={"base_url": emulator.url},
    )


def test_a_batch_prediction_job_from_gcs_to_gcs(vertex, client, emulator, gcs_endpoint, gcs_bucket):
    fs = gcsfs.GCSFileSystem(endpoint_url=gcs_endpoint, token="anon", project="test")
    rows = [
        {
            "request": {
                "contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}],
                "labels": {"k": "a"},
            }
        },
        {"request": {"contents": []}},  # refused: its row says why, the others go on
    ]
    fs.pipe(f"{gcs_bucket}/in.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    job = vertex.batches.create(
        model="gemini-3.8-flash",
        src=f"gs://{gcs_bucket}/in.jsonl",
        config={"dest": f"gs://{gcs_bucket}/out/"},
    )
    assert job.name.startswith("projects/my-project/locations/us-central1/batchPredictionJobs/")
    assert job.state == "JOB_STATE_PENDING" and job.name.rsplit("/", 1)[1].isdigit()
    emulator.store.clock.advance(3600)
    done = vertex.batches.get(name=job.name)
    assert done.state == "JOB_STATE_SUCCEEDED" and done.done
    assert (done.completion_stats.successful_count, done.completion_stats.failed_count) == (1, 1)
    folder = done.output_info.gcs_output_directory
    assert folder.startswith(f"gs://{gcs_bucket}/out/prediction-model-")
    lines = [json.loads(x) for x in fs.cat(f"{folder}/predictions.jsonl").decode().splitlines()]
    ok, bad = lines
    assert list(ok) == ["status", "processed_time", "request", "response"]
    assert ok["status"] == "" and ok["request"]["labels"] == {"k": "a"}  # the request comes back with it
    assert ok["response"]["candidates"][0]["content"]["parts"][0]["text"]
    assert bad["status"].startswith("Bad Request: {") and bad["response"] == {}
    assert [j.name for j in vertex.batches.list()] == [job.name]
    assert list(client.batches.list()) == []  # the Developer API sees its own jobs only
    with pytest.raises(errors.ClientError) as finished:
        vertex.batches.cancel(name=job.name)
    assert finished.value.code == 400
    vertex.batches.delete(name=job.name)
    assert list(vertex.batches.list()) == []


def test_a_cancelled_job_keeps_the_rows_it_finished(vertex, emulator, gcs_endpoint, gcs_bucket):
    fs = gcsfs.GCSFileSystem(endpoint_url=gcs_endpoint, token="anon", project="test")
    line = json.dumps({"request": {"contents": [{"parts": [{"text": "hi"}]}]}}) + "\n"
    fs.pipe(f"{gcs_bucket}/in.jsonl", (line * 2000).encode())
    emulator.store.clock.set_speed(1)
    job = vertex.batches.create(
        model="gemini-3.8-flash", src=f"gs://{gcs_bucket}/in.jsonl", config={"dest": f"gs://{gcs_bucket}/out"}
    )
    emulator.store.clock.advance(30 + 60 + 50)  # at work: about half of the rows are done
    vertex.batches.cancel(name=job.name)
    assert vertex.batches.get(name=job.name).state == "JOB_STATE_CANCELLING"
    emulator.store.clock.advance(10)
    done = vertex.batches.get(name=job.name)
    assert done.state == "JOB_STATE_CANCELLED" and done.error.code == 1
    rows = fs.cat(f"{done.output_info.gcs_output_directory}/predictions.jsonl").decode().splitlines()
    assert 0 < len(rows) < 2000 and done.completion_stats.successful_count == len(rows)


def test_what_vertex_refuses(vertex, gcs_bucket):
    with pytest.raises(errors.ClientError) as unknown:
        vertex.batches.create(model="gemini-2.5-flsh", src=f"gs://{gcs_bucket}/in.jsonl")
    assert unknown.value.code == 404
    with pytest.raises(errors.ClientError) as no_destination:
        vertex.batches.create(model="gemini-3.8-flash", src=f"gs://{gcs_bucket}/folder/")
    assert no_destination.value.code == 400


def test_generate_and_count_on_vertex(vertex, gcs_endpoint, gcs_bucket):
    answer = vertex.models.generate_content(model="gemini-3.8-flash", contents="Why is the sky blue?")
    assert answer.text.startswith("Emulated reply") and answer.usage_metadata.prompt_token_count == 5
    assert (
        vertex.models.count_tokens(model="gemini-3.8-flash", contents="Why is the sky blue?").total_tokens
        == 5
    )
    chunks = list(
        vertex.models.generate_content_stream(model="gemini-3.8-flash", contents="Why is the sky blue?")
    )
    assert "".join(c.text for c in chunks) == answer.text
    # Vertex reads gs:// files where the Developer API takes only its own Files API.
    from pathlib import Path

    from google.genai import types

    photo = Path(__file__).resolve().parent.parent / "pipelines/examples/data/images/red.png"
    fs = gcsfs.GCSFileSystem(endpoint_url=gcs_endpoint, token="anon", project="test")
    fs.pipe(f"{gcs_bucket}/cat.png", photo.read_bytes())
    image = types.Part.from_uri(file_uri=f"gs://{gcs_bucket}/cat.png", mime_type="image/png")
    answer = vertex.models.generate_content(model="gemini-3.8-flash", contents=[image, "Describe it"])
    assert answer.text and answer.usage_metadata.prompt_token_count == 258 + 3  # a tile, and the text
    missing = types.Part.from_uri(file_uri=f"gs://{gcs_bucket}/dog.png", mime_type="image/png")
    with pytest.raises(errors.ClientError, match="Cannot fetch content from the provided URL"):
        vertex.models.generate_content(model="gemini-3.8-flash", contents=[missing, "Describe it"])


def _vertex_pipeline(tmp_path, bucket: str) -> None:
    """Five records in three shards of a pipeline on the Vertex backend, staged in `bucket`."""
    from conftest import write

    write(
        tmp_path / "pipelines/v.yaml",
        f"""
        version: 1
        name: v
        model: gemini-3.8-flash
        backend: vertex
        source: {{uri: data.jsonl, key: "{{{{ id }}}}"}}
        request: {{prompt: "Say {{{{ word }}}}"}}
        batch: {{max_requests: 2, staging: "gs://{bucket}/staging"}}
        output: {{uri: out.jsonl}}
        """,
    )
    rows = "".join(json.dumps({"id": i, "word": f"w{i}"}) + "\n" for i in range(5))
    write(tmp_path / "pipelines/data.jsonl", rows)


def test_a_pipeline_runs_on_the_vertex_backend(
    cli, emulator, emulator_env, gcs_endpoint, gcs_bucket, tmp_path
):
    """The same pipeline, `backend: vertex`: shards staged in Cloud Storage, results joined by
    the hash the requests carry in their labels."""
    emulator.store.gcs_endpoint, emulator.store.gcs = gcs_endpoint, None
    _vertex_pipeline(tmp_path, gcs_bucket)
    result = cli("apply", "--wait", env={"BATCHFLOW_VERTEX_PROJECT": "my-project"})
    assert result.code == 0, result.out + result.err
    assert "projects/my-project/locations/us-central1/batchPredictionJobs/" in result.out
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert all("w" + r["key"] in r["text"] and "error" not in r for r in rows)
    fs = gcsfs.GCSFileSystem(endpoint_url=gcs_endpoint, token="anon", project="test")
    staged = fs.ls(f"{gcs_bucket}/staging", detail=False)
    assert sum(name.endswith(".jsonl") for name in staged) == 3  # one input file a shard
    assert (
        cli("apply", env={"BATCHFLOW_VERTEX_PROJECT": "my-project"}).out.strip()
        == "v: up to date, nothing to do"
    )


def test_validate_names_what_vertex_cannot_do(cli, tmp_path):
    from conftest import write

    write(tmp_path / "data.jsonl", '{"q": "hi"}\n')
    write(tmp_path / "style.md", "house style " * 10)
    write(
        tmp_path / "p.yaml",
        """
        version: 1
        name: p
        model: gemini-3.8-flash
        backend: vertex
        source: {uri: data.jsonl}
        request: {prompt: "{{ q }}", files: [files/abc123]}
        cache: {files: [style.md]}
        batch: {inline_below: 1MB, staging: /tmp/here, max_bytes: 2GB}
        output: {uri: out.jsonl}
        """,
    )
    result = cli("validate", "p.yaml")
    assert result.code == 1
    assert "cache: the vertex backend takes no context cache in batch prediction" in result.err
    assert "inline_below" not in result.err  # on Vertex every job is a file: it means nothing there
    assert "batch.staging: the staging prefix must be a gs:// URL" in result.err
    assert "batch.max_bytes: Vertex AI takes at most 1 GB of input a job" in result.err
    assert "request.files[0]: Files API names do not exist on Vertex AI" in result.err


@pytest.mark.parametrize("kill_after_lines", [1, 2, 3, 5, 7])
def test_kill_9_on_the_vertex_backend_then_apply_again(
    kill_after_lines, vertex, emulator, emulator_env, gcs_bucket, tmp_path
):
    """A run killed anywhere on the Vertex backend is finished by the next, one job per shard."""
    import os

    from conftest import apply_again, kill_apply

    _vertex_pipeline(tmp_path, gcs_bucket)
    env = {**os.environ, **emulator_env, "BATCHFLOW_VERTEX_PROJECT": "my-project"}
    kill_apply(env, kill_after_lines)
    apply_again(env)
    jobs = list(vertex.batches.list())
    assert len(jobs) == 3 and len({j.display_name for j in jobs}) == 3
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["0", "1", "2", "3", "4"] and all("error" not in r for r in rows)


def _without_vertex_only(response: dict) -> dict:
    """A response as both surfaces give it: Vertex adds when it answered and on which traffic."""
    response.pop("createTime", None)
    response.get("usageMetadata", {}).pop("trafficType", None)
    return response


def _rows(path) -> list[dict]:
    """An output's rows, whatever its format."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        for row in rows:  # JSON text: its keys in the order the service (or SDK) gave them
            if "response" in row:
                row["response"] = row["response"] and _without_vertex_only(json.loads(row["response"]))
        return rows
    if path.suffix == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_every_example_gives_the_same_outputs_on_both_backends(
    cli, vertex, emulator_env, gcs_bucket, tmp_path
):
    """Every example runs on both backends with the same rows. support-replies first moves its
    cache into its requests, as validate tells a user to: batch prediction takes no cache."""
    import shutil
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parent.parent
    shutil.copytree(repo / "pipelines", tmp_path / "pipelines")
    specs = sorted((tmp_path / "pipelines/examples").glob("*.yaml"))
    assert len(specs) == 8
    with_cache = tmp_path / "pipelines/examples/support-replies.yaml"
    spec = yaml.safe_load(with_cache.read_text())
    cache = spec.pop("cache")
    spec["request"].update(system=cache["system"], files=cache["files"])
    with_cache.write_text(yaml.safe_dump(spec, sort_keys=False))

    def outputs() -> dict[str, list[dict]]:
        return {p.name: _rows(p) for p in sorted((tmp_path / "out").iterdir())}

    result = cli("apply", "--wait", *map(str, specs), env={"BATCHFLOW_BACKEND": "gemini"})
    assert result.code == 0, result.out + result.err
    on_gemini = outputs()
    assert sum(bool(rows) for rows in on_gemini.values()) == 10  # and an empty errors file
    report = cli("report", "--format", "json", *map(str, specs), env={"BATCHFLOW_BACKEND": "gemini"})
    eval_on_gemini = json.loads(report.out)["groups"]
    shutil.rmtree(tmp_path / "out")
    env = {
        "BATCHFLOW_BACKEND": "vertex",
        "BATCHFLOW_VERTEX_PROJECT": "my-project",
        "BATCHFLOW_STATE": f"gs://{gcs_bucket}/state",  # shards and outputs go to staging/ beside it
    }
    refused = cli("validate", str(repo / "pipelines/examples/support-replies.yaml"), env=env)
    assert refused.code == 1 and "move cache.system to request.system" in refused.err
    result = cli("apply", "--wait", *map(str, specs), env=env)
    assert result.code == 0, result.out + result.err
    assert "batchPredictionJobs" in result.out
    assert outputs() == on_gemini
    # The eval example's report: the same scores, tokens and costs on both.
    report = cli("report", "--format", "json", *map(str, specs), env=env)
    assert json.loads(report.out)["groups"] == eval_on_gemini


def test_vertex_caches_serve_generate_content_but_not_batch_prediction(
    vertex, client, emulator, gcs_endpoint, gcs_bucket
):
    """cachedContents under the project and location, as the SDK speaks them with vertexai=True;
    the docs say batch prediction takes no explicit cache, so its rows naming one fail."""
    from google.genai import types

    emulator.store.clock.set_speed(1)  # a cache lives 600 s of the emulator's clock
    guide = "Our house style is short and warm. " * 300  # about 2,600 tokens: over Vertex's 2,048
    config = types.CreateCachedContentConfig(
        contents=[types.Content(role="user", parts=[types.Part(text=guide)])],
        system_instruction="You answer in the house style.",
        display_name="style",
        ttl="600s",
    )
    cache = vertex.caches.create(model="gemini-3.8-flash", config=config)
    assert cache.name.startswith("projects/my-project/locations/us-central1/cachedContents/")
    assert cache.name.rsplit("/", 1)[1].isdigit()
    assert (
        cache.model == "projects/my-project/locations/us-central1/publishers/google/models/gemini-3.8-flash"
    )
    assert [c.name for c in vertex.caches.list()] == [cache.name]
    assert list(client.caches.list()) == []  # the Developer API sees its own caches only
    with pytest.raises(errors.ClientError, match="too small"):
        vertex.caches.create(
            model="gemini-3.8-flash",
            config={"contents": [{"role": "user", "parts": [{"text": "short"}]}]},
        )

    answer = vertex.models.generate_content(
        model="gemini-3.8-flash", contents="Hello", config={"cached_content": cache.name.rsplit("/", 1)[1]}
    )
    assert (
        answer.usage_metadata.cached_content_token_count
        == vertex.caches.get(name=cache.name).usage_metadata.total_token_count
    )

    before = vertex.caches.get(name=cache.name).expire_time
    emulator.store.clock.advance(60)
    assert vertex.caches.update(name=cache.name, config={"ttl": "600s"}).expire_time > before

    fs = gcsfs.GCSFileSystem(endpoint_url=gcs_endpoint, token="anon", project="test")
    line = {
        "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "cachedContent": cache.name}
    }
    fs.pipe(f"{gcs_bucket}/in.jsonl", (json.dumps(line) + "\n").encode())
    job = vertex.batches.create(
        model="gemini-3.8-flash", src=f"gs://{gcs_bucket}/in.jsonl", config={"dest": f"gs://{gcs_bucket}/out"}
    )
    emulator.store.clock.advance(3600 * 2)
    done = vertex.batches.get(name=job.name)
    (row,) = [
        json.loads(x)
        for x in fs.cat(f"{done.output_info.gcs_output_directory}/predictions.jsonl").splitlines()
    ]
    assert "cachedContent" in row["status"] and "not supported in batch prediction" in row["status"]


def _images_pipeline(tmp_path, fs, bucket: str, keys: list[str], batch: str) -> None:
    """A Vertex pipeline of requests naming an image each: the first a gs:// object in `bucket`
    (read in place), the others one local file (copied to staging)."""
    from pathlib import Path

    from conftest import write

    images = Path(__file__).resolve().parent.parent / "pipelines/examples/data/images"
    fs.pipe(f"{bucket}/photos/red.png", (images / "red.png").read_bytes())
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    (tmp_path / "pipelines/blue.png").write_bytes((images / "blue.png").read_bytes())
    write(
        tmp_path / "pipelines/v.yaml",
        f"""
        version: 1
        name: v
        model: gemini-3.8-flash
        backend: vertex
        source: {{uri: data.jsonl, key: "{{{{ id }}}}"}}
        request: {{prompt: "Describe it", files: ["{{{{ image }}}}"]}}
        batch: {{{batch}, staging: "gs://{bucket}/staging"}}
        output: {{uri: out.jsonl}}
        """.replace("{, ", "{"),
    )
    images_of = [f"gs://{bucket}/photos/red.png"] + ["blue.png"] * (len(keys) - 1)
    write(
        tmp_path / "pipelines/data.jsonl",
        "".join(json.dumps({"id": k, "image": i}) + "\n" for k, i in zip(keys, images_of, strict=True)),
    )


def test_gs_files_are_read_where_they_are_and_local_ones_staged_once(
    cli, emulator, emulator_env, gcs_endpoint, gcs_bucket, tmp_path
):
    """On Vertex a request's gs:// file is named in place; a local file is copied to the staging
    prefix once, however many requests name it."""
    emulator.store.gcs_endpoint, emulator.store.gcs = gcs_endpoint, None
    fs = gcsfs.GCSFileSystem(endpoint_url=gcs_endpoint, token="anon", project="test")
    _images_pipeline(tmp_path, fs, gcs_bucket, ["a", "b", "c"], batch="")
    result = cli("apply", "--wait", env={"BATCHFLOW_VERTEX_PROJECT": "my-project"})
    assert result.code == 0, result.out + result.err
    out = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in out] == ["a", "b", "c"] and all(r["text"] for r in out)
    assert result.out.count("blue.png as gs://") == 1 and "red.png as" not in result.out
    assert len(fs.ls(f"{gcs_bucket}/staging/files")) == 1
    (shard,) = [p for p in fs.ls(f"{gcs_bucket}/staging", detail=False) if p.endswith(".jsonl")]
    assert f"gs://{gcs_bucket}/photos/red.png" in fs.cat(shard).decode()


def test_two_runners_racing_on_the_vertex_backend_make_one_job_a_shard(
    vertex, emulator, emulator_env, gcs_bucket, tmp_path
):
    """Two CI runners (own caches, one gs:// state) start `apply --wait` at once: the lock lets
    one work while the other waits, and no shard gets a second job."""
    import os
    import subprocess
    import sys

    _vertex_pipeline(tmp_path, gcs_bucket)
    env = {
        **os.environ,
        **emulator_env,
        "BATCHFLOW_VERTEX_PROJECT": "my-project",
        "BATCHFLOW_STATE": f"gs://{gcs_bucket}/state",
    }
    runners = [
        subprocess.Popen(
            [sys.executable, "-m", "batchflow", "apply", "--wait"],
            env={**env, "XDG_CACHE_HOME": str(tmp_path / f"runner-{n}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(2)
    ]
    said = [r.communicate(timeout=120)[0] for r in runners]
    assert [r.returncode for r in runners] == [0, 0], said
    jobs = list(vertex.batches.list())
    assert len(jobs) == 3 and len({j.display_name for j in jobs}) == 3
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["0", "1", "2", "3", "4"] and all("error" not in r for r in rows)


def test_a_vertex_job_created_but_not_recorded_is_adopted(
    cli, vertex, emulator, emulator_env, gcs_bucket, tmp_path
):
    """The window between the create and the state write, on Vertex: the next apply finds the
    job by its display name instead of paying for a second one."""
    from batchflow.state.store import LocalStore, ShardStatus

    _vertex_pipeline(tmp_path, gcs_bucket)
    emulator.store.clock.set_speed(1)
    env = {"BATCHFLOW_VERTEX_PROJECT": "my-project"}
    assert cli("apply", env=env).code == 0
    store = LocalStore(emulator_env["BATCHFLOW_STATE"])
    state = store.load("v")
    for shard in state.shards.values():  # rewound to just before each create's answer was saved
        shard.status, shard.job_name, shard.job_state = ShardStatus.CREATING, None, None
    store.save(state)
    emulator.store.clock.advance(3600)
    result = cli("apply", "--wait", env=env)
    assert result.code == 0, result.out + result.err
    assert result.out.count("adopted") == 3
    assert len(list(vertex.batches.list())) == 3
    assert len((tmp_path / "pipelines/out.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize(
    ("vertex_state", "seen_as"),
    [
        ("JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_SUCCEEDED"),
        ("JOB_STATE_QUEUED", "JOB_STATE_PENDING"),
        ("JOB_STATE_PAUSED", "JOB_STATE_RUNNING"),
        ("JOB_STATE_UPDATING", "JOB_STATE_RUNNING"),
        ("JOB_STATE_CANCELLING", "JOB_STATE_RUNNING"),
        ("JOB_STATE_EXPIRED", "JOB_STATE_EXPIRED"),
        ("JOB_STATE_CANCELLED", "JOB_STATE_CANCELLED"),
    ],
)
def test_each_vertex_job_state_is_mapped_deliberately(vertex_state, seen_as):
    from google.genai import types

    from batchflow.backends.vertex import _job

    job = _job(types.BatchJob(name="projects/p/locations/l/batchPredictionJobs/1", state=vertex_state))
    assert job.state == seen_as
    assert job.done == (seen_as in ("JOB_STATE_SUCCEEDED", "JOB_STATE_EXPIRED", "JOB_STATE_CANCELLED"))


def test_status_cancel_and_destroy_on_the_vertex_backend(
    cli, vertex, emulator, emulator_env, gcs_endpoint, gcs_bucket, tmp_path
):
    """The same commands, the same behaviour: status shows the jobs, cancel stops them, destroy
    deletes jobs and staged files, but never a user's gs:// file that requests read in place."""
    fs = gcsfs.GCSFileSystem(endpoint_url=gcs_endpoint, token="anon", project="test")
    _images_pipeline(tmp_path, fs, gcs_bucket, ["a", "b"], batch="max_requests: 1")
    env = {"BATCHFLOW_VERTEX_PROJECT": "my-project"}
    emulator.store.clock.set_speed(1)
    assert cli("apply", env=env).code == 0
    status = cli("status", env=env)
    assert status.code == 0 and status.out.count("batchPredictionJobs/") == 2, status.out
    result = cli("cancel", env=env)
    assert result.code == 0 and "2 job(s) cancelled" in result.out, result.out + result.err
    emulator.store.clock.set_speed(3600)
    assert {j.state for j in vertex.batches.list()} <= {"JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"}
    result = cli("destroy", "--yes", env=env)
    assert result.code == 0, result.out + result.err
    assert list(vertex.batches.list()) == []
    assert fs.exists(f"{gcs_bucket}/photos/red.png")  # the user's file, read in place, stays
    assert not fs.exists(f"{gcs_bucket}/staging/files") or fs.ls(f"{gcs_bucket}/staging/files") == []
    assert [p for p in fs.ls(f"{gcs_bucket}/staging", detail=False) if p.endswith(".jsonl")] == []


def test_a_failed_vertex_job_keeps_the_rows_it_finished(
    cli, vertex, emulator, emulator_env, gcs_bucket, tmp_path
):
    """Vertex exports what a failed job finished, and those answers are paid for: they are
    kept, and only the rest is sent again. A job that answered nothing is retried as before."""
    import httpx2 as httpx
    from conftest import write

    write(
        tmp_path / "pipelines/v.yaml",
        f"""
        version: 1
        name: v
        model: gemini-3.8-flash
        backend: vertex
        source: {{uri: data.jsonl, key: "{{{{ id }}}}"}}
        request: {{prompt: "Say {{{{ id }}}}"}}
        batch: {{staging: "gs://{gcs_bucket}/staging"}}
        retry: {{attempts: 2}}
        output: {{uri: out.jsonl}}
        """,
    )
    write(tmp_path / "pipelines/data.jsonl", "".join(json.dumps({"id": i}) + "\n" for i in range(4)))
    httpx.post(f"{emulator.url}/_emulator/faults", json={"job_fail_rate": 1.0}).raise_for_status()
    result = cli("apply", "--wait", env={"BATCHFLOW_VERTEX_PROJECT": "my-project"})
    assert result.code == 3, result.out + result.err  # one request never answered: over the policy
    # Every job fails after half of its rows: 4 requests, then the 2 unanswered, then the last
    # one (alone, it answers nothing) and its one retry. Nothing answered is sent again.
    sent = sorted(
        (int(j.completion_stats.successful_count or 0) for j in vertex.batches.list()), reverse=True
    )
    assert sorted(
        emulator.store.get_job(j.name.rsplit("/", 1)[1]).request_count for j in vertex.batches.list()
    ) == [1, 1, 2, 4]
    assert sent == [2, 1, 0, 0]
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["0", "1", "2", "3"]
    assert sum("error" in r for r in rows) == 1 and sum("text" in r for r in rows) == 3


def test_vertex_answers_as_vertex_does(vertex):
    """A cache that is not there is 404 there (the Developer API says 403); responses carry
    createTime, responseId and usageMetadata.trafficType; Vertex-only fields are taken, and the
    Developer API's serviceTier body field is refused, as the SDK's own test expects."""
    with pytest.raises(errors.ClientError) as missing:
        vertex.caches.get(name="projects/my-project/locations/us-central1/cachedContents/nope")
    assert missing.value.code == 404
    answer = vertex.models.generate_content(model="gemini-3.8-flash", contents="hi")
    assert answer.create_time is not None and answer.response_id
    assert answer.usage_metadata.traffic_type.name == "ON_DEMAND"
    armor = {"model_armor_config": {"prompt_template_name": "t"}, "labels": {"team": "a"}}
    assert vertex.models.generate_content(model="gemini-3.8-flash", contents="hi", config=armor).text
    with pytest.raises(errors.ClientError) as tier:
        vertex.models.generate_content(
            model="gemini-3.8-flash", contents="hi", config={"service_tier": "flex"}
        )
    assert tier.value.code == 400


def test_vertex_embedding_models(vertex):
    """text-embedding-005 is served by :predict (768 values and their statistics); the Gemini
    embedding models by :embedContent, on Vertex as on the Developer API."""
    answer = vertex.models.embed_content(model="text-embedding-005", contents=["hello world", "bye"])
    assert [len(e.values) for e in answer.embeddings] == [768, 768]
    assert answer.embeddings[0].statistics.token_count == 3
    for model in ("gemini-embedding-2", "gemini-embedding-001"):
        assert len(vertex.models.embed_content(model=model, contents="hello").embeddings[0].values) == 3072


def test_flex_on_the_vertex_backend_asks_in_headers_and_reads_the_traffic_type(
    cli, emulator, emulator_env, gcs_endpoint, gcs_bucket, tmp_path
):
    """Vertex takes the tier in X-Vertex-AI-LLM-Shared-Request-Type (a serviceTier in the body is
    refused) and says in usageMetadata.trafficType which served the call."""
    emulator.store.gcs_endpoint, emulator.store.gcs = gcs_endpoint, None
    _vertex_pipeline(tmp_path, gcs_bucket)
    spec = tmp_path / "pipelines/v.yaml"
    spec.write_text(spec.read_text().replace("backend: vertex", "backend: vertex\ntier: flex"))
    result = cli("apply", env={"BATCHFLOW_VERTEX_PROJECT": "my-project"})
    assert result.code == 0, result.out + result.err
    assert "batchPredictionJobs" not in result.out and emulator.store.flex_calls == 5
    rows = [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert all(r["tier"] == "flex" and "w" + r["key"] in r["text"] for r in rows)
