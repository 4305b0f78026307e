"""HTTP routes of the emulator: the Gemini API's wire protocol, as the SDK speaks it.

Every API route is served under both /v1 (the SDK's default) and /v1beta (REST
examples). The key comes in the x-goog-api-key header or the `key` query
parameter; upload chunks carry none and are authorised by their upload id.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import itertools
import json
import random
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from ..spec import refusals
from . import models, responder
from .errors import ApiError
from .store import Store, rfc3339
from .vertex import VertexRoutes

MAX_REQUEST_BYTES = 20 * 1024 * 1024  # the service's limit on one request, inline batches included
DEFAULT_PAGE_SIZE = 50


class Emulator:
    """The emulator's state and settings; `app` is its ASGI application."""

    def __init__(self, store: Store, api_key: str | None = None, lifespan=None) -> None:
        self.store = store
        self.api_key = api_key
        api = [
            Route("/files", self.list_files, methods=["GET"]),
            Route("/files/{rest}", self.file, methods=["GET", "DELETE"]),
            Route("/models", self.list_models, methods=["GET"]),
            Route("/models/{rest}", self.model_call, methods=["GET", "POST"]),
            Route("/batches", self.list_batches, methods=["GET"]),
            Route("/batches/{rest}", self.batch, methods=["GET", "POST", "DELETE"]),
            Route("/cachedContents", self.caches, methods=["GET", "POST"]),
            Route("/cachedContents/{rest}", self.cache, methods=["GET", "PATCH", "DELETE"]),
        ]
        routes = [
            Route("/_emulator/clock", self.admin_clock, methods=["GET", "POST"]),
            Route("/_emulator/faults", self.admin_faults, methods=["GET", "POST"]),
            *VertexRoutes(self).mounts(),  # before /v1, which would take /v1/projects/... too
        ]
        for version in ("v1", "v1beta", "v1alpha"):
            routes += [
                Route(f"/upload/{version}/files", self.upload, methods=["POST"]),
                Route(f"/download/{version}/files/{{rest}}", self.file, methods=["GET"]),
                Mount(f"/{version}", routes=api),
            ]
        app = Starlette(
            routes=routes,
            exception_handlers={ApiError: _error, 404: _not_found, 405: _not_found},
            lifespan=lifespan,
        )
        self.app = _Gate(app, self)
        self._calls = itertools.count()
        self._calls_lock = threading.Lock()
        self._tier_calls: dict[str, collections.deque[float]] = {}  # recent calls' times, a tier

    # ------------------------------------------------------------ helpers

    def admit(self, request: Request) -> None:
        """What happens before every API call: the key check, then injected faults."""
        self._auth(request)
        faults = self.store.faults
        with self._calls_lock:
            n = next(self._calls)
        if faults.hit(faults.rate_limit_rate, "429", n):
            raise ApiError(429, "Resource has been exhausted (e.g. check quota).")
        if faults.hit(faults.unavailable_rate, "503", n):
            raise ApiError(503, "The service is currently unavailable.")

    def _rate_limit(self, tier: str) -> None:
        """Each tier's own limit of calls a minute (the `<tier>_rpm` faults), on the emulator's
        clock: a call over it is answered 429, with the seconds until a slot frees."""
        limit = getattr(self.store.faults, f"{tier}_rpm", 0.0)
        if not limit:
            return
        now = self.store.clock.now()
        with self._calls_lock:
            calls = self._tier_calls.setdefault(tier, collections.deque())
            while calls and calls[0] <= now - 60:
                calls.popleft()
            if len(calls) >= limit:
                self.store.tier_limited += 1
                wait = (calls[0] + 60 - now) / max(self.store.clock.speed, 1e-9)
                raise ApiError(
                    429, f"Quota exceeded for {tier} requests per minute.", retry_after=max(1, round(wait))
                )
            calls.append(now)

    async def _flex(self, request: Request) -> None:
        """Flex is best effort, with a 1 to 15 minute target: a share of calls is shed (503,
        with Retry-After), and the others answer after a latency drawn on the emulator's clock
        (most within a minute or two, a few near the target's end)."""
        faults = self.store.faults
        with self._calls_lock:
            n = next(self._calls)
        self.store.flex_calls += 1
        if faults.hit(faults.flex_shed_rate, "flex", n):
            self.store.flex_shed += 1
            raise ApiError(503, "The model is overloaded. Please try again later.", retry_after=1)
        latency = min(900.0, random.Random(f"{faults.seed}:{n}").expovariate(1 / 90))
        speed = self.store.clock.speed
        if speed > 0:
            await asyncio.sleep(latency / speed)

    def _auth(self, request: Request) -> None:
        if "/projects/" in request.url.path:  # Vertex: an OAuth bearer token (any, here)
            if not request.headers.get("authorization", "").startswith("Bearer "):
                message = "Request is missing required authentication credential."
                raise ApiError(401, message, "UNAUTHENTICATED")
            return
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            raise ApiError(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if self.api_key is not None and key != self.api_key:
            raise ApiError(400, "API key not valid. Please pass a valid API key.")

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"Invalid JSON payload received. {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received. Expected an object.")
        return body

    @staticmethod
    def _base_url(request: Request) -> str:
        return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"

    @staticmethod
    def _page(request: Request, items: list, key: str, render) -> JSONResponse:
        try:
            size = int(request.query_params.get("pageSize") or DEFAULT_PAGE_SIZE)
            start = int(request.query_params.get("pageToken") or 0)
        except ValueError:
            raise ApiError(400, "Invalid pageSize or pageToken") from None
        size = max(1, min(size, 1000))
        body: dict[str, Any] = {key: [render(i) for i in items[start : start + size]]}
        if start + size < len(items):
            body["nextPageToken"] = str(start + size)
        return JSONResponse(body)

    # ------------------------------------------------------------ files

    async def upload(self, request: Request) -> Response:
        upload_id = request.query_params.get("upload_id")
        if upload_id is None:
            return await self._start_upload(request)
        upload = self.store.get_upload(upload_id)
        command = request.headers.get("x-goog-upload-command", "")
        offset = int(request.headers.get("x-goog-upload-offset", upload.received))
        if "finalize" in command and (refused := refusals.mime_type(upload.mime_type)):
            raise ApiError(400, refused)  # as often as it is asked
        if offset != upload.received:
            raise ApiError(400, f"Upload offset {offset} does not match the {upload.received} bytes received")
        # Streamed to disk chunk by chunk: a 2 GB upload never sits in memory.
        with open(upload.path, "ab") as f:
            async for chunk in request.stream():
                upload.received += len(chunk)
                if upload.received > upload.size:
                    raise ApiError(400, "Upload is larger than the announced size")
                f.write(chunk)
        if "finalize" not in command:
            return Response(headers={"x-goog-upload-status": "active"})
        stored = self.store.finish_upload(upload)
        return JSONResponse(
            {"file": self.store.file_json(stored, self._base_url(request))},
            headers={"x-goog-upload-status": "final"},
        )

    async def _start_upload(self, request: Request) -> Response:
        body = (await self._json(request)).get("file") or {}
        try:
            size = int(request.headers["x-goog-upload-header-content-length"])
        except (KeyError, ValueError):
            raise ApiError(400, "X-Goog-Upload-Header-Content-Length is required") from None
        mime = (
            request.headers.get("x-goog-upload-header-content-type")
            or body.get("mime_type")
            or body.get("mimeType")
            or "application/octet-stream"
        )
        upload = self.store.start_upload(
            size, mime, body.get("display_name") or body.get("displayName"), body.get("name")
        )
        version = request.url.path.split("/")[2]
        # The SDK uses this URL verbatim, so it must point back at this server.
        url = f"{self._base_url(request)}/upload/{version}/files?upload_id={upload.id}"
        url += "&upload_protocol=resumable"
        return Response(headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"})

    def list_files(self, request: Request) -> Response:
        base = self._base_url(request)
        return self._page(request, self.store.list_files(), "files", lambda f: self.store.file_json(f, base))

    def file(self, request: Request) -> Response:
        file_id, _, verb = request.path_params["rest"].partition(":")
        stored = self.store.get_file(file_id)
        if verb == "download":
            return FileResponse(self.store.blob(file_id), media_type="application/octet-stream")
        if verb:
            raise ApiError(404, f"Unknown method {verb}")
        if request.method == "DELETE":
            self.store.delete_file(file_id)
            return JSONResponse({})
        return JSONResponse(self.store.file_json(stored, self._base_url(request)))

    # ------------------------------------------------------------ models

    def list_models(self, request: Request) -> Response:
        return self._page(request, models.listed(), "models", lambda item: models.model_json(*item))

    async def model_call(self, request: Request) -> Response:
        model, _, verb = request.path_params["rest"].partition(":")
        version = request.url.path.split("/")[1]
        if request.method == "GET" and not verb:
            if (described := models.describe(model)) is None:
                raise ApiError(404, f"models/{model} is not found for API version {version}")
            return JSONResponse(models.model_json(*described))
        found = models.find(model)
        # Streaming and the batch verbs that the listings leave out are served where their kin are.
        kin = {"streamGenerateContent": "generateContent", "batchEmbedContents": "embedContent"}
        if found is None or kin.get(verb, verb) not in found[1].methods:
            raise ApiError(
                404,
                f"models/{model} is not found for API version {version}, or is not supported for {verb}. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        if int(request.headers.get("content-length") or 0) > MAX_REQUEST_BYTES:
            raise ApiError(400, f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.")
        body = await self._json(request)
        vertex = "/projects/" in request.url.path
        model = found[0]  # a routed model answers as its target
        if verb == "streamGenerateContent":
            response = await run_in_threadpool(
                functools.partial(self.store.generate, f"models/{model}", body, vertex=vertex)
            )
            chunks = responder.stream_chunks(response)
            tier = {} if vertex else {"x-gemini-service-tier": responder.service_tier(body)}
            if request.query_params.get("alt") != "sse":
                return JSONResponse(chunks, headers=tier)
            return StreamingResponse(
                (f"data: {json.dumps(c, ensure_ascii=False)}\r\n\r\n" for c in chunks),
                media_type="text/event-stream",
                headers=tier,
            )
        # Vertex takes the tier in headers (Flex and Priority PayGo), the Developer API in the body.
        shared = request.headers.get("x-vertex-ai-llm-shared-request-type", "").lower() if vertex else ""
        asked = shared if vertex else responder.service_tier(body)
        if verb == "generateContent":
            self._rate_limit(asked or "standard")
        if verb == "generateContent" and asked == "flex":
            await self._flex(request)
        # Off the event loop: a create counts the lines of a file of up to 2 GB.
        call = functools.partial(self._model_call, f"models/{model}", verb, body, vertex=vertex)
        result = await run_in_threadpool(call)
        if verb == "generateContent" and vertex and shared in _TRAFFIC:
            result["usageMetadata"]["trafficType"] = _TRAFFIC[shared]  # which traffic served it
        answer = JSONResponse(result)
        if verb == "generateContent" and not vertex:  # the tier that served it, as the service says
            answer.headers["x-gemini-service-tier"] = responder.service_tier(body)
        return answer

    def _model_call(
        self, model: str, verb: str, body: dict[str, Any], *, vertex: bool = False
    ) -> dict[str, Any]:
        embedding = "embedding" in model
        if verb == "batchGenerateContent" and not embedding:
            return self._create_batch(model, "generate", body)
        if verb == "asyncBatchEmbedContent" and embedding:
            return self._create_batch(model, "embed", body)
        if verb == "generateContent" and not embedding:
            return self.store.generate(model, body, vertex=vertex)
        if verb == "countTokens":
            return self.store.count_tokens(model, body)
        if verb == "embedContent" and embedding:
            return responder.embed(body)
        if verb == "predict" and embedding and vertex:
            return responder.predict_embeddings(body)
        if verb == "batchEmbedContents" and embedding:
            requests = body.get("requests")
            if not isinstance(requests, list) or not requests:
                raise ApiError(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
            return {"embeddings": [responder.embed(r)["embedding"] for r in requests]}
        raise ApiError(400, f"models/{model.removeprefix('models/')} does not support {verb}")

    def _create_batch(self, model: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        batch = body.get("batch")
        if not isinstance(batch, dict):
            raise ApiError(400, "batch is required")
        source = batch.get("inputConfig") or batch.get("input_config") or {}
        file_name = source.get("fileName") or source.get("file_name")
        inline = (source.get("requests") or {}).get("requests")
        if (file_name is None) == (inline is None):
            raise ApiError(400, "inputConfig must set exactly one of fileName or requests")
        if inline is not None and not isinstance(inline, list):
            raise ApiError(400, "inputConfig.requests.requests must be a list")
        job = self.store.create_job(model, kind, batch.get("displayName"), file_name, inline)
        return self.store.job_json(job)

    # ------------------------------------------------------------ batches

    def list_batches(self, request: Request) -> Response:
        jobs = [j for j in self.store.list_jobs() if j.vertex is None]
        return self._page(request, jobs, "operations", self.store.job_json)

    def batch(self, request: Request) -> Response:
        job_id, _, verb = request.path_params["rest"].partition(":")
        if self.store.get_job(job_id).vertex is not None:  # not a Developer API batch
            raise ApiError(404, f"Batch batches/{job_id} not found")
        if request.method == "POST" and verb == "cancel":
            self.store.cancel_job(job_id)
            return JSONResponse({})
        if verb:
            raise ApiError(404, f"Unknown method {verb}")
        if request.method == "DELETE":
            self.store.delete_job(job_id)
            return JSONResponse({})
        if request.method == "GET":
            return JSONResponse(self.store.job_json(self.store.get_job(job_id)))
        raise ApiError(404, "Unknown method")

    # ------------------------------------------------------------ caches

    async def caches(self, request: Request) -> Response:
        if request.method == "GET":
            return self._page(request, self.store.list_caches(), "cachedContents", self.store.cache_json)
        body = await self._json(request)
        model = str(body.get("model") or "")
        found = models.find(model)
        if found is None or "createCachedContent" not in found[1].methods:
            raise ApiError(404, f"Model {model or '(none)'} is not found or does not support caching.")
        cache = self.store.create_cache(f"models/{found[0]}", body)
        return JSONResponse(self.store.cache_json(cache))

    async def cache(self, request: Request) -> Response:
        cache_id = request.path_params["rest"]
        if request.method == "DELETE":
            self.store.delete_cache(cache_id)
            return JSONResponse({})
        if request.method == "PATCH":
            cache = self.store.update_cache(cache_id, await self._json(request))
        else:
            cache = self.store.get_cache(cache_id)
        return JSONResponse(self.store.cache_json(cache))

    # ------------------------------------------------------------ control (not part of the Gemini API)

    async def admin_clock(self, request: Request) -> Response:
        """POST {"advance": seconds} and/or {"speed": n}; GET reads the clock."""
        if request.method == "POST":
            body = await self._json(request)
            try:
                if "speed" in body:
                    speed = float(body["speed"])
                    if speed <= 0:
                        raise ValueError
                    self.store.clock.set_speed(speed)
                if "advance" in body:
                    self.store.clock.advance(float(body["advance"]))
            except (TypeError, ValueError):
                raise ApiError(
                    400, "advance must be a number of seconds and speed a positive number"
                ) from None
        return JSONResponse({"now": rfc3339(self.store.clock.now()), "speed": self.store.clock.speed})

    async def admin_faults(self, request: Request) -> Response:
        """POST a JSON object of fault settings (see Faults); GET reads them."""
        if request.method == "POST":
            try:
                self.store.faults.update(await self._json(request))
            except (TypeError, ValueError) as exc:
                raise ApiError(400, str(exc)) from None
        return JSONResponse(dataclasses.asdict(self.store.faults))


class _Gate:
    """ASGI middleware: key check, injected faults and latency before every API call.

    Upload chunks carry no key (the upload id authorises them) and the
    control endpoints are not part of the API, so both pass straight through.
    """

    def __init__(self, app, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and _is_api_call(scope):
            try:
                self.emulator.admit(Request(scope))
            except ApiError as exc:
                await JSONResponse(exc.body(), status_code=exc.code)(scope, receive, send)
                return
            if self.emulator.store.faults.latency:
                await asyncio.sleep(self.emulator.store.faults.latency)
        await self.app(scope, receive, send)


def _is_api_call(scope) -> bool:
    path: str = scope["path"]
    if path.startswith("/upload/"):
        return b"upload_id=" not in scope.get("query_string", b"")
    return path.startswith(("/v1/", "/v1beta/", "/v1beta1/", "/v1alpha/", "/download/"))


_TRAFFIC = {"flex": "ON_DEMAND_FLEX", "priority": "ON_DEMAND_PRIORITY"}  # Vertex's usageMetadata


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"retry-after": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(exc.body(), status_code=exc.code, headers=headers)


async def _not_found(request: Request, exc: Exception) -> Response:
    error = ApiError(404, f"Not found: {request.method} {request.url.path}")
    return JSONResponse(error.body(), status_code=404)
