"""Vertex AI batch prediction through the google-genai SDK (`vertexai=True`).

The same interface as the Developer API backend, over Cloud Storage instead of the Files
API: shards are written to the staging prefix, jobs read them from there and write their
results beside them. Output rows echo their request but not its line's key, so each request
carries its hash in `labels` (see docs/vertex.md) and results join on it.
Embedding requests have no labels: their lines take Vertex's embedding shape, whose `key` the
docs name for mapping outputs back to inputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import fsspec
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ..errors import RemoteError
from ..output.columns import ERROR_FIELDS
from ..settings import Settings
from ..state.atomic import atomic_open
from ..state.store import ErrorInfo
from .base import Generated, Job
from .gemini import _NO_RETRY, SdkBatches, _config_of, _named, _remote
from .rest import RETRY_CODES, Retries, TryAgain

KEY_LABEL = "batchflow-key"  # the request hash, carried through the job in the request's labels
# The Developer API's embedding options, as Vertex's `embed_content_config` names them.
_EMBED_OPTIONS = {"taskType": "task_type", "outputDimensionality": "output_dimensionality", "title": "title"}
# Vertex states the Developer API lacks, as the reconciler should see them. The SDK's `done` is
# False for PARTIALLY_SUCCEEDED and PAUSED, so the mapping, not `done`, decides.
_STATES = {
    # Ended with some rows failed: those rows carry their status, like a Developer result file.
    "JOB_STATE_PARTIALLY_SUCCEEDED": "JOB_STATE_SUCCEEDED",
    # Waiting for capacity: PENDING, so batch.pending_timeout applies.
    "JOB_STATE_QUEUED": "JOB_STATE_PENDING",
    # Neither ended nor waiting for capacity: polled on, as a running job is.
    "JOB_STATE_PAUSED": "JOB_STATE_RUNNING",
    "JOB_STATE_UPDATING": "JOB_STATE_RUNNING",
    "JOB_STATE_CANCELLING": "JOB_STATE_RUNNING",
}  # SUCCEEDED, FAILED, CANCELLED, EXPIRED (queued over 72 hours), PENDING, RUNNING: as they are


class VertexBackend(SdkBatches):
    takes_inline = False  # batch prediction reads Cloud Storage only: inline_below means nothing here

    def __init__(self, settings: Settings, staging: str) -> None:
        if not settings.vertex_project:
            raise RemoteError("backend vertex: set BATCHFLOW_VERTEX_PROJECT (or GOOGLE_CLOUD_PROJECT)")
        self.staging = staging.rstrip("/")
        self.base_url = (
            settings.api_base_url or f"https://{settings.vertex_location}-aiplatform.googleapis.com"
        )
        self.placeholder_key = False
        options = types.HttpOptions(base_url=settings.api_base_url) if settings.api_base_url else None
        credentials = None
        if settings.api_base_url:  # an emulator: no Google credentials, a placeholder token
            from google.oauth2.credentials import Credentials

            credentials = Credentials(token="batchflow-emulator")
        self.client = genai.Client(
            vertexai=True,
            project=settings.vertex_project,
            location=settings.vertex_location,
            credentials=credentials,
            http_options=options,
        )
        self.fs, _ = fsspec.core.url_to_fs(self.staging)
        self.retries = Retries()

    # ------------------------------------------------------------ inputs

    def upload(self, path: Path, display_name: str) -> str:
        """Write a shard to the staging prefix, each request carrying its hash in its labels."""
        target = f"{self.staging}/{display_name}.jsonl"
        with open(path, encoding="utf-8") as src, self.fs.open(target, "w", encoding="utf-8") as dst:
            for line in src:
                dst.write(json.dumps(_line(json.loads(line)), ensure_ascii=False) + "\n")
        return target

    def upload_file(self, path: Path, mime_type: str, display_name: str) -> tuple[str, str]:
        """A file that requests name, copied to the staging prefix once; its gs:// URI is its name."""
        target = f"{self.staging}/files/{display_name}{Path(path).suffix}"
        self.fs.put_file(str(path), target)
        return target, target

    def reads_in_place(self, path: str) -> bool:
        """A gs:// file is named where it is: the job reads it there, nothing is copied."""
        return path.startswith("gs://")

    def file_exists(self, name: str) -> bool:
        return self.fs.exists(name)

    def find_files(self, display_names: Collection[str]) -> list[str]:
        """Where `upload` and `upload_file` put files of these display names, if they are there."""
        found = []
        for name in display_names:
            for pattern in (f"{self.staging}/{name}.jsonl", f"{self.staging}/files/{name}*"):
                found += [self.fs.unstrip_protocol(path) for path in self.fs.glob(pattern)]
        return found

    def delete_file(self, name: str) -> None:
        if self.fs.exists(name):
            self.fs.rm(name, recursive=True)

    # ------------------------------------------------------------ jobs

    @_remote
    def create(self, model: str, file_name: str, display_name: str, *, embed: bool = False) -> Job:
        config = types.CreateBatchJobConfig(
            display_name=display_name, dest=f"{self.staging}/out/{display_name}/", http_options=_NO_RETRY
        )
        return self._read(self.client.batches.create(model=model, src=file_name, config=config))

    def cancel(self, name: str) -> None:
        """Cancel a job; one that ended meanwhile needs none (Vertex answers 400 to that)."""
        try:
            super().cancel(name)
        except RemoteError as exc:
            if exc.code != 400 or not self.get(name).done:
                raise

    def delete_job(self, name: str) -> None:
        """Delete a job; one still stopping after a cancel is waited for (a minute at most),
        as Vertex deletes only finished jobs."""
        deadline = time.monotonic() + 60
        try:
            while not self.get(name).done and time.monotonic() < deadline:
                time.sleep(1)
        except RemoteError as exc:
            if exc.code in (403, 404):
                return  # already gone is as good
            raise
        super().delete_job(name)

    def stats(self, name: str) -> tuple[int, int] | None:
        return None  # Vertex reports completion stats only once a job ends

    def _read(self, job: types.BatchJob) -> Job:
        return _job(job)

    def download(self, folder: str, destination: Path) -> None:
        """The job's output rows as result lines (`{"key", "response"}` or `{"key", "error"}`)."""
        with atomic_open(destination) as out:
            for path in sorted(self.fs.glob(f"{folder.rstrip('/')}/predictions*.jsonl")):
                with self.fs.open(path, encoding="utf-8") as rows:
                    for raw in rows:
                        if raw.strip():
                            out.write(
                                json.dumps(_result(json.loads(raw)), ensure_ascii=False).encode() + b"\n"
                            )

    # ------------------------------------------------------------ what Vertex batch does not take

    # The spec checks refuse a cache and inline jobs on Vertex; these say so if one gets here.

    def create_cache(self, model: str, body: dict[str, Any], ttl: float, display_name: str) -> str:
        raise _no_cache()

    def find_cache(self, display_name: str) -> str | None:
        raise _no_cache()

    def keep_cache(self, name: str, ttl: float) -> bool:
        raise _no_cache()

    def delete_cache(self, name: str) -> None:
        raise _no_cache()

    def create_inline(self, model: str, requests: list[tuple[str, dict]], display_name: str) -> Job:
        raise RemoteError("backend vertex: batch prediction reads its requests from Cloud Storage only")

    def generate(self, model: str, request: dict[str, Any], tier: str) -> Generated:
        """A call on Flex or Priority PayGo: the tier goes in the request's headers (a
        `serviceTier` in the body is refused), `shared` so that no Provisioned Throughput is
        used; `usageMetadata.trafficType` says which served it (docs/vertex.md)."""
        headers = {"X-Vertex-AI-LLM-Request-Type": "shared"} if tier in _SHARED else {}
        if tier in _SHARED:
            headers["X-Vertex-AI-LLM-Shared-Request-Type"] = tier
        config = types.GenerateContentConfig.model_validate(_config_of(request))
        config.http_options = types.HttpOptions(headers=headers, retry_options=_NO_RETRY.retry_options)
        contents = [types.Content.model_validate(c) for c in request["contents"]]

        def call() -> tuple[dict[str, Any], str | None]:
            try:
                answer = self.client.models.generate_content(model=model, contents=contents, config=config)
            except genai_errors.APIError as exc:
                error = {"code": exc.code, "message": exc.message or "", "status": exc.status}
                if exc.code in RETRY_CODES:
                    raise TryAgain(error) from None
                return {"error": error}, None
            response = answer.model_dump(mode="json", by_alias=True, exclude_none=True)
            traffic = (response.get("usageMetadata") or {}).get("trafficType")
            return {"response": response}, _TRAFFIC.get(str(traffic), traffic)

        return self.retries.run(call)

    def download_inline(self, name: str, destination: Path) -> None:
        raise RemoteError("backend vertex: batch prediction writes its results to Cloud Storage only")


# The tiers Vertex serves on shared capacity, and what trafficType says served a call.
_SHARED = ("flex", "priority")
_TRAFFIC = {"ON_DEMAND_FLEX": "flex", "ON_DEMAND_PRIORITY": "priority", "ON_DEMAND": "standard"}


def _no_cache() -> RemoteError:
    return RemoteError("backend vertex: batch prediction takes no context cache")


def _job(job: types.BatchJob) -> Job:
    state = job.state.name if job.state is not None else "JOB_STATE_UNSPECIFIED"
    folder = job.output_info.gcs_output_directory if job.output_info is not None else None
    error = ErrorInfo.of(job.error.code, job.error.message) if job.error is not None else None
    return Job(
        name=_named(job.name, "batchPredictionJobs"),
        display_name=job.display_name,
        state=_STATES.get(state, state),
        result_file=folder,
        error=error,
    )


def _line(row: dict) -> dict:
    """A shard line (`{"key", "request"}`, the Developer API's) as a Vertex input line."""
    request = row["request"]
    if "content" in request:  # an embedding: {"key", "request": {"content", "embed_content_config"}}
        config = {_EMBED_OPTIONS[k]: request.pop(k) for k in list(request) if k in _EMBED_OPTIONS}
        return {
            "key": row["key"],
            "request": {**request, **({"embed_content_config": config} if config else {})},
        }
    request["labels"] = {**request.get("labels", {}), KEY_LABEL: row["key"]}
    return {"request": request}


def _result(row: dict) -> dict:
    """A Vertex output row as a result line: keyed by the hash in its request's labels (or the
    embedding line's key); a failed row's status string ("Bad Request: {json}") as the error,
    as the service said it."""
    key = ((row.get("request") or {}).get("labels") or {}).get(KEY_LABEL) or row.get("key")
    status = row.get("status") or ""
    if not status:
        response = row.get("response") or {}
        if row.get("predictions"):  # the text-embedding models' older shape
            response = {"embedding": {"values": row["predictions"][0]["embeddings"]["values"]}}
        return {"key": key, "response": response}
    _, _, detail = status.partition(": ")
    try:
        error = json.loads(detail)["error"]
    except (ValueError, KeyError, TypeError):
        error = {"code": None, "message": status}
    return {"key": key, "error": {k: error.get(k) for k in ERROR_FIELDS}}
