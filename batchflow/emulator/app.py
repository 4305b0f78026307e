"""HTTP routes of the emulator: the Gemini API's wire protocol, as the SDK speaks it.

Every API route is served under both /v1 (the SDK's default) and /v1beta (REST
examples). The key comes in the x-goog-api-key header or the `key` query
parameter; upload chunks carry none and are authorised by their upload id.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route

from . import responder
from .errors import ApiError
from .store import Store

_MODEL = re.compile(r"^(gemini|gemma|learnlm)-[a-z0-9.\-]+$|^(text-)?embedding-[a-z0-9.\-]+$")
DEFAULT_PAGE_SIZE = 50


class Emulator:
    """The emulator's state and settings; `app` is its ASGI application."""

    def __init__(self, store: Store, api_key: str | None = None) -> None:
        self.store = store
        self.api_key = api_key
        api = [
            Route("/files", self.list_files, methods=["GET"]),
            Route("/files/{rest}", self.file, methods=["GET", "DELETE"]),
            Route("/models/{rest}", self.model_call, methods=["POST"]),
            Route("/batches", self.list_batches, methods=["GET"]),
            Route("/batches/{rest}", self.batch, methods=["GET", "POST", "DELETE"]),
        ]
        routes = []
        for version in ("v1", "v1beta"):
            routes += [
                Route(f"/upload/{version}/files", self.upload, methods=["POST"]),
                Route(f"/download/{version}/files/{{rest}}", self.file, methods=["GET"]),
                Mount(f"/{version}", routes=api),
            ]
        self.app = Starlette(
            routes=routes, exception_handlers={ApiError: _error, 404: _not_found, 405: _not_found}
        )

    # ------------------------------------------------------------ helpers

    def _auth(self, request: Request) -> None:
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
        self._auth(request)
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
        self._auth(request)
        base = self._base_url(request)
        return self._page(request, self.store.list_files(), "files", lambda f: self.store.file_json(f, base))

    def file(self, request: Request) -> Response:
        self._auth(request)
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

    async def model_call(self, request: Request) -> Response:
        self._auth(request)
        model, _, verb = request.path_params["rest"].partition(":")
        if not _MODEL.match(model):
            raise ApiError(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported for {verb}. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        body = await self._json(request)
        model = f"models/{model}"
        if verb == "batchGenerateContent":
            return JSONResponse(self._create_batch(model, body))
        if verb == "generateContent":
            return JSONResponse(responder.generate(model, body))
        if verb == "countTokens":
            request_body = body.get("generateContentRequest") or body
            return JSONResponse({"totalTokens": responder.prompt_tokens(request_body)})
        raise ApiError(404, f"Method {verb} is not supported by the emulator")

    def _create_batch(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
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
        job = self.store.create_job(model, batch.get("displayName"), file_name, inline)
        return self.store.job_json(job)

    # ------------------------------------------------------------ batches

    def list_batches(self, request: Request) -> Response:
        self._auth(request)
        return self._page(request, self.store.list_jobs(), "operations", self.store.job_json)

    def batch(self, request: Request) -> Response:
        self._auth(request)
        job_id, _, verb = request.path_params["rest"].partition(":")
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


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.code)


async def _not_found(request: Request, exc: Exception) -> Response:
    error = ApiError(404, f"Not found: {request.method} {request.url.path}")
    return JSONResponse(error.body(), status_code=404)
