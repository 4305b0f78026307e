"""Vertex AI batch prediction, as the SDK speaks it with `vertexai=True` (see
docs/vertex.md): jobs under /{v1,v1beta1}/projects/P/locations/L/
batchPredictionJobs that read their input from and write their output to Cloud Storage (the
fake-gcs-server the tests run, `--gcs-endpoint` or STORAGE_EMULATOR_HOST).

Jobs share the store's clock, faults, persistence and responder with the Developer API side;
only the wire shapes and the storage differ.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from . import models
from .errors import ApiError

if TYPE_CHECKING:
    from .app import Emulator
    from .store import Job, Store

# The Developer API's job states (how the store runs jobs) as Vertex names them.
_STATES = {
    "BATCH_STATE_PENDING": "JOB_STATE_PENDING",
    "BATCH_STATE_RUNNING": "JOB_STATE_RUNNING",
    "BATCH_STATE_SUCCEEDED": "JOB_STATE_SUCCEEDED",
    "BATCH_STATE_FAILED": "JOB_STATE_FAILED",
    "BATCH_STATE_CANCELLED": "JOB_STATE_CANCELLED",
    "BATCH_STATE_EXPIRED": "JOB_STATE_EXPIRED",
}
VERSIONS = ("v1", "v1beta1")


def gcs(store: Store):
    """The Cloud Storage the Vertex side reads and writes (gcsfs at the emulator's endpoint)."""
    if store.gcs is None:
        import gcsfs

        endpoint = store.gcs_endpoint or os.environ.get("STORAGE_EMULATOR_HOST")
        if not endpoint:
            raise ApiError(400, "no Cloud Storage endpoint: start the emulator with --gcs-endpoint URL")
        store.gcs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon", project="emulator")
    return store.gcs


def numeric_id() -> str:
    """Vertex AI's resource ids: 19 digits (the SDK takes numeric job ids only)."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


def _stamp(ts: float, digits: int = 3) -> str:
    text = datetime.fromtimestamp(ts, UTC).isoformat(
        timespec="milliseconds" if digits == 3 else "microseconds"
    )
    return text.replace("+00:00", "Z")


def create(store: Store, project: str, location: str, body: dict[str, Any]) -> Job:
    model = str(body.get("model") or "")
    short = model.removeprefix("publishers/google/models/").removeprefix("models/")
    found = models.find(short)
    if found is None:
        raise ApiError(404, f"Publisher Model `{model}` is not found or not supported for batch prediction.")
    source = (body.get("inputConfig") or {}).get("gcsSource") or {}
    uris = source.get("uris") or []
    destination = ((body.get("outputConfig") or {}).get("gcsDestination") or {}).get("outputUriPrefix")
    if not uris or (body.get("inputConfig") or {}).get("instancesFormat") != "jsonl":
        raise ApiError(400, "inputConfig: a jsonl gcsSource with at least one uri is required.")
    if not destination:
        raise ApiError(400, "outputConfig is required.")
    fs = gcs(store)
    paths = [p for uri in uris for p in (sorted(fs.glob(uri)) if "*" in uri else [uri])]
    job_id = numeric_id()
    local = store.root / "vertex" / f"{job_id}.jsonl"
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(local, "wb") as out:
            for path in paths:
                with fs.open(path, "rb") as src:
                    for line in src:
                        if line.strip():
                            out.write(line if line.endswith(b"\n") else line + b"\n")
    except FileNotFoundError as exc:
        raise ApiError(400, f"Failed to read the input: {exc}") from None
    job = store.create_job(
        f"models/{found[0]}",
        "embed" if found[1].embedding else "generate",
        body.get("displayName"),
        None,
        None,
        vertex={
            "project": project,
            "location": location,
            "model": model if model.startswith("publishers/") else f"publishers/google/models/{short}",
            "inputConfig": body["inputConfig"],
            "outputConfig": body["outputConfig"],
            "input": str(local),
        },
        job_id=job_id,
    )
    return job


def run(store: Store, job: Job, limit: int | None) -> None:
    """Answer the job's rows (the first `limit`) into `<prefix>/prediction-model-<created>/predictions.jsonl`,
    in the shape Vertex writes: a status string, the time, the request echoed, the response.
    Embedding rows also echo their line's `key`, which the docs name for mapping outputs back to
    inputs (the rest of their shape is unconfirmed: they follow the generate rows)."""
    assert job.vertex is not None
    prefix = job.vertex["outputConfig"]["gcsDestination"]["outputUriPrefix"].rstrip("/")
    folder = f"{prefix}/prediction-model-{_stamp(job.created, 6)}"
    with gcs(store).open(f"{folder}/predictions.jsonl", "wb") as out:
        for line, request, answer in store.answer_lines(job, Path(job.vertex["input"]), limit):
            error = answer.get("error")
            row = {
                **({"key": line["key"]} if job.kind == "embed" and "key" in line else {}),
                "status": "" if error is None else f"Bad Request: {json.dumps({'error': error})}",
                "processed_time": _stamp(store.clock.now()).replace("Z", "+00:00"),
                "request": request,
                "response": answer.get("response") or {},
            }
            out.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    job.vertex["outputDirectory"] = folder


def resource(job: Job) -> dict[str, Any]:
    """A BatchPredictionJob resource."""
    v = job.vertex
    assert v is not None
    state = _STATES.get(job.state, "JOB_STATE_PENDING")
    if job.cancelled_at is not None and job.state not in ("BATCH_STATE_CANCELLED",) and not job.ended:
        state = "JOB_STATE_CANCELLING"
    body: dict[str, Any] = {
        "name": f"projects/{v['project']}/locations/{v['location']}/batchPredictionJobs/{job.id}",
        "displayName": job.display_name or f"genai_batch_job_{job.id}",
        "model": v["model"],
        "modelVersionId": "1",
        "inputConfig": v["inputConfig"],
        "outputConfig": v["outputConfig"],
        "state": state,
        "createTime": _stamp(job.created, 6),
        "updateTime": _stamp(job.updated, 6),
    }
    if job.state != "BATCH_STATE_PENDING":
        body["startTime"] = _stamp(job.created + 30)
    if job.ended is not None:
        body["endTime"] = _stamp(job.ended)
        incomplete = job.request_count - job.succeeded - job.failed
        body["completionStats"] = {
            "successfulCount": str(job.succeeded),
            "failedCount": str(job.failed),
            "incompleteCount": str(incomplete),
        }
    if v.get("outputDirectory"):
        body["outputInfo"] = {"gcsOutputDirectory": v["outputDirectory"]}
    if state == "JOB_STATE_FAILED":
        body["error"] = {"code": 13, "message": "Batch prediction job failed: internal error."}
    elif state == "JOB_STATE_CANCELLED":
        body["error"] = {"code": 1, "message": "CANCELED"}
    return body


class VertexRoutes:
    """The batchPredictionJobs collection, for one emulator."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.store = emulator.store

    def mounts(self) -> list[Mount]:
        routes = [
            Route("/batchPredictionJobs", self.collection, methods=["GET", "POST"]),
            Route("/batchPredictionJobs/{rest}", self.item, methods=["GET", "POST", "DELETE"]),
            Route("/cachedContents", self.caches, methods=["GET", "POST"]),
            Route("/cachedContents/{rest}", self.cache, methods=["GET", "PATCH", "DELETE"]),
            # generateContent, streamGenerateContent and countTokens: the Developer API's answers.
            Route("/publishers/google/models/{rest}", self.emulator.model_call, methods=["POST"]),
        ]
        return [Mount(f"/{v}/projects/{{project}}/locations/{{location}}", routes=routes) for v in VERSIONS]

    @staticmethod
    def _scope(request: Request) -> str:
        return f"projects/{request.path_params['project']}/locations/{request.path_params['location']}"

    async def caches(self, request: Request) -> Response:
        """cachedContents of one project and location: usable by generateContent, refused by
        batch prediction (docs D1)."""
        scope = self._scope(request)
        if request.method == "GET":
            caches = self.store.list_caches(scope)
            return self.emulator._page(request, caches, "cachedContents", self.store.cache_json)
        body = await self.emulator._json(request)
        model = str(body.get("model") or "").rpartition("/models/")[2] or str(body.get("model") or "")
        found = models.find(model)
        if found is None or "createCachedContent" not in found[1].methods:
            raise ApiError(
                404, f"Publisher Model `{body.get('model')}` is not found or does not support caching."
            )
        cache = self.store.create_cache(f"models/{found[0]}", body, scope)
        return JSONResponse(self.store.cache_json(cache))

    async def cache(self, request: Request) -> Response:
        cache = self.store.named_cache(f"{self._scope(request)}/cachedContents/{request.path_params['rest']}")
        if request.method == "DELETE":
            self.store.delete_cache(cache.id)
            return JSONResponse({})
        if request.method == "PATCH":
            cache = self.store.update_cache(cache.id, await self.emulator._json(request))
        return JSONResponse(self.store.cache_json(cache))

    def _jobs(self, request: Request) -> list[Job]:
        p, loc = request.path_params["project"], request.path_params["location"]
        return [
            j
            for j in self.store.list_jobs()
            if j.vertex and j.vertex["project"] == p and j.vertex["location"] == loc
        ]

    async def collection(self, request: Request) -> Response:
        if request.method == "GET":
            return self.emulator._page(request, self._jobs(request), "batchPredictionJobs", resource)
        body = await self.emulator._json(request)
        job = create(self.store, request.path_params["project"], request.path_params["location"], body)
        return JSONResponse(resource(job))

    def _job(self, request: Request, job_id: str) -> Job:
        found = [j for j in self._jobs(request) if j.id == job_id]
        if not found:
            raise ApiError(404, f"The BatchPredictionJob does not exist: {job_id}")
        return found[0]

    async def item(self, request: Request) -> Response:
        job_id, _, verb = request.path_params["rest"].partition(":")
        job = self._job(request, job_id)
        if request.method == "GET" and not verb:
            return JSONResponse(resource(job))
        if request.method == "POST" and verb == "cancel":
            if job.ended is not None:
                state = resource(job)["state"]
                raise ApiError(400, f"Cannot cancel a job in state {state}.", "FAILED_PRECONDITION")
            self.store.cancel_job(job.id)
            return JSONResponse({})
        if request.method == "DELETE" and not verb:
            if job.ended is None:
                message = "The BatchPredictionJob cannot be deleted until it has finished."
                raise ApiError(400, message, "FAILED_PRECONDITION")
            self.store.delete_job(job.id)
            name = resource(job)["name"].rsplit("/batchPredictionJobs/", 1)[0]
            return JSONResponse({"name": f"{name}/operations/{job.id}", "done": True})
        raise ApiError(404, "Unknown method")
