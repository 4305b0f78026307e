"""The Gemini Developer API through the google-genai SDK.

SDK and HTTP errors are turned into RemoteError here, so no caller handles
google-genai types.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import json
import os
import warnings
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar, cast

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ..errors import RemoteError
from ..settings import Settings
from ..state.atomic import atomic_open
from ..state.store import ErrorInfo
from .base import Generated, Job
from .rest import Generator, JobReader, api_key, refused

# A create is never retried blindly: a lost answer may hide a job that exists.
# The reconciler finds such a job by its display name instead.
_NO_RETRY = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))

T = TypeVar("T")

# google-genai sends through httpx or its fork httpx2, whichever is installed.
_TRANSPORT_ERRORS = tuple(
    importlib.import_module(m).HTTPError for m in ("httpx", "httpx2") if importlib.util.find_spec(m)
)


def _remote(call: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(call)
    def wrapper(self: GeminiBackend, *args, **kwargs) -> T:
        try:
            return call(self, *args, **kwargs)
        except genai_errors.APIError as exc:
            raise refused(
                call.__name__,
                exc.code or 0,
                exc.status or "",
                exc.message or "",
                base_url=self.base_url,
                placeholder=self.placeholder_key,
            ) from None
        except _TRANSPORT_ERRORS as exc:
            raise RemoteError(
                f"{call.__name__}: cannot reach the Gemini API at {self.base_url}: {exc}",
                transient=True,
            ) from None

    return wrapper


class SdkBatches:
    """The batch calls both surfaces of the SDK make alike; `_read` turns a job into ours."""

    client: genai.Client

    def _read(self, job: types.BatchJob) -> Job:
        return _job(job)

    @_remote
    def get(self, name: str) -> Job:
        return self._read(self.client.batches.get(name=name))

    @_remote
    def find(self, display_name: str) -> Job | None:
        """The newest job with this display name, if any."""
        for job in self.client.batches.list(config=types.ListBatchJobsConfig(page_size=100)):
            if job.display_name == display_name:
                return self._read(job)
        return None

    @_remote
    def cancel(self, name: str) -> None:
        self.client.batches.cancel(name=name)

    @_remote
    def delete_job(self, name: str) -> None:
        _present(lambda: self.client.batches.delete(name=name))  # already gone is as good

    @_remote
    def get_model(self, model: str) -> None:
        """Raises RemoteError 404 when the service does not know `model`."""
        self.client.models.get(model=model)

    @_remote
    def count_tokens(self, model: str, contents: list[dict]) -> int:
        """Input tokens of `contents` (REST form), as the API counts them."""
        parts = [types.Content.model_validate(c) for c in contents]
        return self.client.models.count_tokens(model=model, contents=parts).total_tokens or 0


class GeminiBackend(SdkBatches):
    """Upload, create, poll and download batch jobs."""

    takes_inline = True  # small jobs may travel in the create call (batch.inline_below)

    def reads_in_place(self, path: str) -> bool:
        return False  # requests name Files API uploads only

    def __init__(self, settings: Settings) -> None:
        self.base_url = (
            settings.api_base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or "the default endpoint"
        )
        key, self.placeholder_key = api_key(settings)
        self.jobs = JobReader(settings)  # reading a job needs no SDK: see rest.py
        self.generator = Generator(settings)
        # Idempotent calls are retried by the SDK on 408/429/5xx with exponential backoff.
        retry = types.HttpRetryOptions(attempts=settings.http_attempts, initial_delay=1.0, max_delay=30.0)
        options = types.HttpOptions(retry_options=retry)
        if settings.api_base_url:
            options.base_url = settings.api_base_url
        self.client = genai.Client(api_key=key, http_options=options)

    @_remote
    def upload(self, path: Path, display_name: str) -> str:
        file = self.client.files.upload(
            file=str(path),
            config=types.UploadFileConfig(display_name=display_name, mime_type="jsonl"),
        )
        return _named(file.name, "upload")

    @_remote
    def upload_file(self, path: Path, mime_type: str, display_name: str) -> tuple[str, str]:
        """Upload any file (an image, a document); returns its name and URI."""
        file = self.client.files.upload(
            file=str(path), config=types.UploadFileConfig(display_name=display_name, mime_type=mime_type)
        )
        return _named(file.name, "upload"), _named(file.uri, "upload")

    @_remote
    def create_cache(self, model: str, body: dict, ttl: float, display_name: str) -> str:
        """Create a context cache from its REST-form body (contents, systemInstruction, tools)."""
        config = types.CreateCachedContentConfig(
            display_name=display_name,
            ttl=f"{int(ttl)}s",
            contents=[types.Content.model_validate(c) for c in body.get("contents", [])] or None,
            system_instruction=types.Content.model_validate(body["systemInstruction"])
            if "systemInstruction" in body
            else None,
            tools=[types.Tool.model_validate(t) for t in body.get("tools", [])] or None,
        )
        return _named(self.client.caches.create(model=model, config=config).name, "caches.create")

    @_remote
    def find_cache(self, display_name: str) -> str | None:
        """The name of a live cache with this display name, if any."""
        for cache in self.client.caches.list(config=types.ListCachedContentsConfig(page_size=100)):
            if cache.display_name == display_name:
                return cache.name
        return None

    @_remote
    def keep_cache(self, name: str, ttl: float) -> bool:
        """Extend a cache's life by `ttl` from now; False if it is gone."""
        config = types.UpdateCachedContentConfig(ttl=f"{int(ttl)}s")
        return _present(lambda: self.client.caches.update(name=name, config=config))

    @_remote
    def delete_cache(self, name: str) -> None:
        _present(lambda: self.client.caches.delete(name=name))  # already gone is as good

    @_remote
    def find_files(self, display_names: Collection[str]) -> list[str]:
        """The names of uploaded files with one of these display names (a run killed before it
        saved an upload's name leaves one the state does not know)."""
        wanted = set(display_names)
        if not wanted:
            return []
        files = self.client.files.list(config=types.ListFilesConfig(page_size=100))
        return [f.name for f in files if f.name and f.display_name in wanted]

    @_remote
    def file_exists(self, name: str) -> bool:
        return _present(lambda: self.client.files.get(name=name))

    @_remote
    def create(self, model: str, file_name: str, display_name: str, *, embed: bool = False) -> Job:
        if embed:
            embeddings = types.CreateEmbeddingsBatchJobConfig(
                display_name=display_name, http_options=_NO_RETRY
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the SDK marks batch embeddings experimental
                job = self.client.batches.create_embeddings(
                    model=model, src=types.EmbeddingsBatchJobSource(file_name=file_name), config=embeddings
                )
        else:
            config = types.CreateBatchJobConfig(display_name=display_name, http_options=_NO_RETRY)
            job = self.client.batches.create(model=model, src=file_name, config=config)
        return _job(job)

    @_remote
    def create_inline(self, model: str, requests: list[tuple[str, dict]], display_name: str) -> Job:
        """A job whose (key, REST request) pairs travel in the create call itself (20 MB at most)."""
        src = [
            types.InlinedRequest(
                contents=[types.Content.model_validate(c) for c in request["contents"]],
                config=types.GenerateContentConfig.model_validate(_config_of(request)),
                metadata={"key": key},
            )
            for key, request in requests
        ]
        config = types.CreateBatchJobConfig(display_name=display_name, http_options=_NO_RETRY)
        return _job(self.client.batches.create(model=model, src=src, config=config))

    @_remote
    def download_inline(self, name: str, destination: Path) -> None:
        """Write an inline job's responses as result lines, like a result file's."""
        job = self.client.batches.get(name=name)
        with atomic_open(destination) as f:
            for item in (job.dest.inlined_responses if job.dest else None) or []:
                line: dict[str, Any] = {"key": (item.metadata or {}).get("key")}
                if item.error is not None:
                    line["error"] = item.error.model_dump(mode="json", exclude_none=True)
                elif item.response is not None:
                    line["response"] = item.response.model_dump(mode="json", by_alias=True, exclude_none=True)
                f.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")

    def _read(self, batch_job: types.BatchJob) -> Job:
        """A failed job with the service's reason, which the SDK drops in Developer mode (see
        docs/protocol.md): read again from the raw operation."""
        job = _job(batch_job)
        if job.state != "JOB_STATE_FAILED" or job.error is not None:
            return job
        return self.jobs.get(job.name)

    def get(self, name: str) -> Job:
        return self.jobs.get(name)

    def generate(self, model: str, request: dict[str, Any], tier: str) -> Generated:
        return self.generator.generate(model, request, tier)

    def stats(self, name: str) -> tuple[int, int] | None:
        return self.jobs.stats(name)

    @_remote
    def delete_file(self, name: str) -> None:
        _present(lambda: self.client.files.delete(name=name))

    @_remote
    def download(self, file_name: str, destination: Path) -> None:
        """Stream a file to `destination`, which appears only once complete."""
        with atomic_open(destination) as f:
            self.client.files.download(file=file_name, destination=cast(io.IOBase, f))


def _present(call: Callable[[], object]) -> bool:
    """Make the call; False when the service answers that the thing is gone (403 or 404)."""
    try:
        call()
    except genai_errors.ClientError as exc:
        if exc.code in (403, 404):
            return False
        raise
    return True


_HOISTED = ("systemInstruction", "safetySettings", "tools", "toolConfig", "cachedContent", "labels")


def _config_of(request: dict) -> dict:
    """The SDK's GenerateContentConfig gathers what REST keeps beside contents."""
    return {**request.get("generationConfig", {}), **{k: request[k] for k in _HOISTED if k in request}}


def _job(job: types.BatchJob) -> Job:
    state = job.state.name if job.state is not None else "JOB_STATE_UNSPECIFIED"
    dest = job.dest.file_name if job.dest is not None else None
    error = ErrorInfo.of(job.error.code, job.error.message) if job.error is not None else None
    return Job(
        name=_named(job.name, "batches"),
        display_name=job.display_name,
        state=state,
        result_file=dest,
        error=error,
    )


def _named(value: str | None, call: str) -> str:
    """A name the service must give back (of a file, job or cache); an answer without one is its
    failure, not ours to carry on with."""
    if not value:
        raise RemoteError(f"{call}: the service answered without a name", transient=True)
    return value
