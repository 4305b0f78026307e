"""Reading a Developer API batch job over plain HTTP, without the SDK.

A poll of a running pipeline only reads its jobs. Importing google-genai for that was most of
a poll's cost (0.3 s of 0.9 s, against 0.34 s for `status`), so `get` and `stats` of the
Developer backend come here: one `GET /v1beta/batches/<id>` (the operation), read as the SDK
reads it (`BATCH_STATE_*` -> `JOB_STATE_*`, `metadata.output.responsesFile`), plus the two
fields the SDK drops in Developer mode: the operation's `error` and `metadata.batchStats`
(docs/protocol.md). Idempotent reads are retried on 408, 429 and 5xx, as the SDK retries them.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ..errors import RemoteError
from ..settings import Settings
from ..state.store import ErrorInfo
from .base import Generated, Job

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"  # the SDK's, for the Developer API
TIMEOUT = 60.0  # seconds for one read


def api_key(settings: Settings) -> tuple[str, bool]:
    """The key to send, and whether it is a placeholder: an emulator (BATCHFLOW_API_BASE_URL)
    started without --api-key takes any key; the service takes none."""
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if key:
        return key, False
    if not settings.api_base_url:
        raise RemoteError("no API key: set GEMINI_API_KEY, or BATCHFLOW_API_BASE_URL to use the emulator")
    return "batchflow-emulator", True


def base_url(settings: Settings) -> str:
    """Where the Developer API is: the emulator's URL, the SDK's GOOGLE_GEMINI_BASE_URL, or the service."""
    return (settings.api_base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def refused(
    call: str, code: int, status: str, message: str, *, base_url: str, placeholder: bool
) -> RemoteError:
    """The service's refusal of a call, in one line; transient when trying again may help."""
    if placeholder and code in (400, 401, 403) and "API key" in message:
        return RemoteError(
            f"no API key is set, and {base_url} wants one: set GEMINI_API_KEY "
            "(for an emulator started with --api-key, that key)",
            code=code,
        )
    return RemoteError(
        f"{call}: {code} {status}: {message}".replace("  ", " "),
        code=code,
        transient=code in (408, 429) or code >= 500,
    )


def job_of(operation: dict[str, Any]) -> Job:
    """A batch operation as batchflow reads a job."""
    meta = operation.get("metadata") or {}
    state = str(meta.get("state") or "BATCH_STATE_UNSPECIFIED")
    error = operation.get("error")
    return Job(
        name=operation["name"],
        display_name=meta.get("displayName"),
        state="JOB_STATE_" + state.removeprefix("BATCH_STATE_"),
        result_file=(meta.get("output") or {}).get("responsesFile"),
        error=ErrorInfo.of(error.get("code"), error.get("message"), error.get("status"))
        if isinstance(error, dict)
        else None,
    )


class JobReader:
    """`get` and `stats` of the Developer backend, over HTTP."""

    def __init__(self, settings: Settings) -> None:
        self.base_url = base_url(settings)
        self.key, self.placeholder = api_key(settings)
        self.attempts = max(1, settings.http_attempts)

    def get(self, name: str) -> Job:
        return job_of(self._read("get", name))

    def stats(self, name: str) -> tuple[int, int] | None:
        """(requests done, requests in all) of a job at work; None when the service does not say."""
        stats = (self._read("stats", name).get("metadata") or {}).get("batchStats") or {}
        total = int(stats.get("requestCount") or 0)
        if not total:
            return None
        return total - int(stats.get("pendingRequestCount") or 0), total

    def _read(self, call: str, name: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.base_url}/{API_VERSION}/{name}", headers={"x-goog-api-key": self.key}
        )
        delay = 1.0
        for attempt in range(1, self.attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                    return json.loads(answer.read())
            except urllib.error.HTTPError as exc:
                error = _error_of(exc)
                failure = refused(
                    call,
                    exc.code,
                    str(error.get("status") or ""),
                    str(error.get("message") or exc.reason),
                    base_url=self.base_url,
                    placeholder=self.placeholder,
                )
            except (urllib.error.URLError, OSError) as exc:
                failure = RemoteError(
                    f"{call}: cannot reach the Gemini API at {self.base_url}: {exc}", transient=True
                )
            if not failure.transient or attempt == self.attempts:
                raise failure
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")


def _error_of(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        error = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


RETRY_CODES = (429, 500, 503, 504)  # shed, rate-limited, or failed in passing: tried again


class TryAgain(Exception):  # noqa: N818 - a signal between a call and its retries, not an error
    """A call the service asks to make again later; `error` is its answer if no later one comes."""

    def __init__(self, error: dict[str, Any], retry_after: float = 0.0) -> None:
        super().__init__(error.get("message"))
        self.error, self.retry_after = error, retry_after


class Retries:
    """Calls tried again while the service sheds them or limits their rate: exponential backoff
    with full jitter, waiting at least what `Retry-After` asked, up to `attempts` calls."""

    def __init__(self, attempts: int = 8, max_delay: float = 60.0) -> None:
        self.attempts, self.max_delay = attempts, max_delay
        self._random = random.Random()

    def run(self, call: Callable[[], tuple[dict[str, Any], str | None]]) -> Generated:
        error: dict[str, Any] = {}
        for attempt in range(1, self.attempts + 1):
            try:
                answer, served = call()
                return answer, served, attempt
            except TryAgain as again:
                error, wait = again.error, again.retry_after
            if attempt < self.attempts:
                time.sleep(max(wait, self._random.uniform(0, min(self.max_delay, 0.5 * 2**attempt))))
        return {"error": error}, None, self.attempts


class Generator:
    """`generateContent` on a service tier (Flex, Standard, Priority), over HTTP.

    Flex is best effort: the service may shed a call (503) or limit the rate (429). Such calls,
    and 500, 504 and lost connections, are tried again (`Retries`); the answer then is the last
    error, as a result line holds it (a retryable code: a later apply sends it again). Other
    refusals (400, 404...) are answered at once as errors.
    """

    def __init__(self, settings: Settings, retries: Retries | None = None) -> None:
        self.base_url = base_url(settings)
        self.key, self.placeholder = api_key(settings)
        self.retries = retries or Retries()

    def generate(self, model: str, request: dict[str, Any], tier: str) -> Generated:
        """The answer or the error, as a result line holds it ({"response": ...} or
        {"error": ...}); the tier that served it, from the `x-gemini-service-tier` header; and
        the calls it took."""
        body = json.dumps({**request, "serviceTier": tier}).encode()
        name = model if model.startswith("models/") else f"models/{model}"
        url = f"{self.base_url}/{API_VERSION}/{name}:generateContent"
        headers = {"x-goog-api-key": self.key, "content-type": "application/json"}

        def call() -> tuple[dict[str, Any], str | None]:
            try:
                post = urllib.request.Request(url, body, headers)
                with urllib.request.urlopen(post, timeout=900) as answer:  # flex's target: 15 minutes
                    served = answer.headers.get("x-gemini-service-tier")
                    return {"response": json.loads(answer.read())}, served
            except urllib.error.HTTPError as exc:
                found = _error_of(exc)
                error = {"code": exc.code, "message": str(found.get("message") or exc.reason)}
                error["status"] = found.get("status")
                if exc.code in RETRY_CODES:
                    raise TryAgain(error, _retry_after(exc.headers.get("retry-after"))) from None
                return {"error": error}, None
            except (urllib.error.URLError, OSError) as exc:
                message = f"cannot reach the Gemini API at {self.base_url}: {exc}"
                raise TryAgain({"code": 503, "message": message, "status": "UNAVAILABLE"}) from None

        return self.retries.run(call)


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP date: the backoff stands
