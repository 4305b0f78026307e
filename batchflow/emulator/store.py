"""The emulator's world: a clock, files, batch jobs and context caches.

Jobs advance lazily: whenever a job is read, its state is worked out from the
emulator clock, and a job that has reached its end gets its results then.
With a data dir, the metadata is saved to `state.json` after each change, so
files, jobs and caches survive a restart.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..spec import refusals
from ..spec.tokens import file_tokens
from . import models, responder, vertex
from .errors import ApiError
from .faults import Faults

MAX_FILE_BYTES = 2 * 1024**3  # the Files API's limit per file
PENDING_SECONDS = 30.0  # a job waits this long before it runs ...
RUNNING_SECONDS = 60.0  # ... then runs this long, plus per request:
SECONDS_PER_REQUEST = 0.05
CANCEL_SECONDS = 5.0  # a cancel takes effect this long after it was asked for
DEFAULT_CACHE_TTL = 3600.0
TERMINAL = {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."


class Clock:
    """Emulator time: runs `speed` times faster than real time, and can be pushed forward."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        self.speed = speed
        self._real0 = time.time()
        self._emu0 = start if start is not None else self._real0
        self._offset = 0.0

    def now(self) -> float:
        return self._emu0 + (time.time() - self._real0) * self.speed + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds

    def set_speed(self, speed: float) -> None:
        """Change speed from now on; emulator time never jumps."""
        current = self.now()
        self._real0, self._emu0, self._offset, self.speed = time.time(), current, 0.0, speed


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, f"Invalid timestamp {text!r}") from None


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(text).strip())
    if not match:
        raise ApiError(400, f"Invalid duration {text!r}: expected seconds like '300s'")
    return float(match.group(1))


VERTEX_MIN_CACHE_TOKENS = 2_048


def new_id() -> str:
    return secrets.token_hex(6)


@dataclass
class StoredFile:
    id: str
    display_name: str | None
    mime_type: str
    size: int
    sha256: str
    created: float
    source: str  # UPLOADED | GENERATED

    @property
    def name(self) -> str:
        return f"files/{self.id}"


@dataclass
class Upload:
    id: str
    path: str
    size: int
    mime_type: str
    display_name: str | None
    name: str | None
    received: int = 0


@dataclass
class Cache:
    id: str
    model: str
    display_name: str | None
    created: float
    updated: float
    expires: float
    tokens: int
    system: dict[str, Any] | None = None
    tools: list[Any] | None = None
    scope: str | None = None  # "projects/P/locations/L" for a Vertex AI cache

    @property
    def name(self) -> str:
        return f"{self.scope}/cachedContents/{self.id}" if self.scope else f"cachedContents/{self.id}"


@dataclass
class Job:
    id: str
    model: str
    kind: str  # generate | embed
    display_name: str | None
    created: float
    input_file: str | None  # files/<id>
    inline: list[dict[str, Any]] | None
    request_count: int
    seq: int = 0  # creation order: fault decisions hang on it, so a seed replays the same faults
    state: str = "BATCH_STATE_PENDING"
    updated: float = 0.0
    ended: float | None = None
    cancelled_at: float | None = None
    output_file: str | None = None
    inline_responses: list[dict[str, Any]] | None = None
    succeeded: int = 0
    failed: int = 0
    tokens: int = 0  # estimated input tokens, held against the enqueued-token quota
    vertex: dict[str, Any] | None = None  # a Vertex batch prediction job: project, location, configs

    @property
    def name(self) -> str:
        return f"batches/{self.id}"


def _check_limits(name: str, model: models.Model, request: dict[str, Any]) -> None:
    """What the service refuses about a request's generation settings, by model."""
    config = request.get("generationConfig") or {}
    if refused := refusals.max_output_tokens(model, config.get("maxOutputTokens")):
        raise ApiError(400, refused)
    if (config.get("responseLogprobs") or config.get("logprobs") is not None) and not model.logprobs:
        raise ApiError(400, f"Logprobs is not enabled for {name}")
    thinking = config.get("thinkingConfig") or config.get("thinking_config") or {}
    level = thinking.get("thinkingLevel", thinking.get("thinking_level"))
    budget = thinking.get("thinkingBudget", thinking.get("thinking_budget"))
    if refused := refusals.thinking(model, level, budget):
        raise ApiError(400, refused)


class Store:
    def __init__(
        self,
        data_dir: Path | None = None,
        speed: float = 1.0,
        faults: Faults | None = None,
        gcs_endpoint: str | None = None,
    ) -> None:
        self.gcs_endpoint = gcs_endpoint  # Cloud Storage of the Vertex side (see vertex.py)
        self.gcs = None
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="batchflow-emulator-")
        self.persistent = data_dir is not None
        self.root = Path(data_dir or self._tmp.name)  # type: ignore[union-attr]  # one of the two
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        self.faults = faults or Faults()
        self.flex_calls = 0  # generateContent calls on the Flex tier, shed ones included
        self.flex_shed = 0
        self.tier_limited = 0  # generateContent calls over their tier's calls a minute (429)
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self.caches: dict[str, Cache] = {}
        self.lock = threading.RLock()
        self._job_locks: dict[str, threading.Lock] = {}
        self._media_tokens: dict[str, int] = {}  # file id -> tokens (files never change)
        self._digests: dict[str, str] = {}  # file URI -> sha256 of its content
        self._answered: collections.Counter[str] = collections.Counter()  # responseId -> times
        self.clock = Clock(speed, self._load())

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------ persistence

    def _load(self) -> float | None:
        path = self.root / "state.json"
        if not self.persistent or not path.exists():
            return None
        doc = json.loads(path.read_text())
        self.files = {d["id"]: StoredFile(**d) for d in doc["files"]}
        self.uploads = {d["id"]: Upload(**d) for d in doc["uploads"]}
        self.jobs = {d["id"]: Job(**d) for d in doc["jobs"]}
        self.caches = {d["id"]: Cache(**d) for d in doc["caches"]}
        return doc["now"]

    def save(self) -> None:
        if not self.persistent:
            return
        with self.lock:
            doc = {
                "now": self.clock.now(),
                "files": [asdict(f) for f in self.files.values()],
                "uploads": [asdict(u) for u in self.uploads.values()],
                "jobs": [asdict(j) for j in self.jobs.values()],
                "caches": [asdict(c) for c in self.caches.values()],
            }
            tmp = self.root / "state.json.tmp"
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.root / "state.json")

    # ------------------------------------------------------------ files

    def blob(self, file_id: str) -> Path:
        return self.root / "files" / file_id

    def start_upload(self, size: int, mime_type: str, display_name: str | None, name: str | None) -> Upload:
        if size > MAX_FILE_BYTES:
            raise ApiError(400, f"File size {size} exceeds the maximum of {MAX_FILE_BYTES} bytes")
        if name is not None:
            file_id = name.removeprefix("files/")
            if not re.fullmatch(r"[a-z0-9]{1,40}", file_id):
                raise ApiError(400, f"Invalid file name {name!r}: use up to 40 lowercase letters and digits")
            if file_id in self.files:
                raise ApiError(409, f"File {name} already exists.")
        upload_id = new_id()
        upload = Upload(
            upload_id, str(self.root / "uploads" / upload_id), size, mime_type, display_name, name
        )
        Path(upload.path).touch()
        with self.lock:
            self.uploads[upload.id] = upload
        self.save()
        return upload

    def get_upload(self, upload_id: str) -> Upload:
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise ApiError(404, "Upload session not found or already finalized")
        return upload

    def finish_upload(self, upload: Upload) -> StoredFile:
        if upload.received != upload.size:
            raise ApiError(400, f"Upload is {upload.received} bytes, but {upload.size} were announced")
        file_id = upload.name.removeprefix("files/") if upload.name else new_id()
        digest = hashlib.sha256()
        with open(upload.path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        os.replace(upload.path, self.blob(file_id))
        stored = StoredFile(
            file_id,
            upload.display_name,
            upload.mime_type,
            upload.size,
            base64.b64encode(digest.digest()).decode(),
            self.clock.now(),
            "UPLOADED",
        )
        with self.lock:
            self.uploads.pop(upload.id, None)
            self.files[file_id] = stored
        self.save()
        return stored

    def get_file(self, file_id: str) -> StoredFile:
        with self.lock:
            stored = self.files.get(file_id)
            if stored is not None and self.clock.now() > stored.created + self.faults.file_ttl:
                self._delete_file(file_id)
                stored = None
        if stored is None:
            raise ApiError(
                403, f"You do not have permission to access the File {file_id} or it may not exist."
            )
        return stored

    def list_files(self) -> list[StoredFile]:
        return self._live(self.files, self.get_file)

    def delete_file(self, file_id: str) -> None:
        self.get_file(file_id)
        with self.lock:
            self._delete_file(file_id)
        self.save()

    def _delete_file(self, file_id: str) -> None:
        self.files.pop(file_id, None)
        self.blob(file_id).unlink(missing_ok=True)

    def file_json(self, stored: StoredFile, base_url: str) -> dict[str, Any]:
        return {
            "name": stored.name,
            **({"displayName": stored.display_name} if stored.display_name else {}),
            "mimeType": stored.mime_type,
            "sizeBytes": str(stored.size),
            "createTime": rfc3339(stored.created),
            "updateTime": rfc3339(stored.created),
            "expirationTime": rfc3339(stored.created + self.faults.file_ttl),
            "sha256Hash": stored.sha256,
            "uri": f"{base_url}/v1beta/{stored.name}",
            "downloadUri": f"{base_url}/v1beta/{stored.name}:download?alt=media",
            "state": "ACTIVE",
            "source": stored.source,
        }

    # ------------------------------------------------------------ caches

    def create_cache(self, model: str, body: dict[str, Any], scope: str | None = None) -> Cache:
        """A context cache; `scope` ("projects/P/locations/L") makes it a Vertex AI one, with a
        numeric id and Vertex's minimum of 2,048 tokens (docs D8)."""
        contents = body.get("contents") or []
        system = body.get("systemInstruction") or body.get("system_instruction")
        tokens = responder.prompt_tokens(
            {"contents": contents, "systemInstruction": system}, self.part_tokens
        )
        minimum = VERTEX_MIN_CACHE_TOKENS if scope else responder.min_cache_tokens(model)
        if tokens < minimum:
            raise ApiError(
                400,
                f"Cached content is too small. total_token_count={tokens}, min_total_token_count={minimum}",
            )
        now = self.clock.now()
        cache = Cache(
            vertex.numeric_id() if scope else new_id(),
            model,
            body.get("displayName"),
            now,
            now,
            self._expiry(body, now, default=now + DEFAULT_CACHE_TTL),
            tokens,
            system,
            body.get("tools"),
            scope,
        )
        with self.lock:
            self.caches[cache.id] = cache
        self.save()
        return cache

    def _expiry(self, body: dict[str, Any], now: float, default: float) -> float:
        if body.get("ttl") is not None:
            return now + parse_duration(body["ttl"])
        if body.get("expireTime") is not None:
            return parse_time(body["expireTime"])
        return default

    def get_cache(self, cache_id: str) -> Cache:
        with self.lock:
            cache = self.caches.get(cache_id)
            if cache is not None and self.clock.now() >= cache.expires:
                self.caches.pop(cache_id, None)
                cache = None
        if cache is None:
            raise ApiError(403, f"CachedContent not found (or permission denied): cachedContents/{cache_id}")
        return cache

    def named_cache(self, name: str) -> Cache:
        """The cache a request names: `cachedContents/ID`, or on Vertex its full name."""
        scope, _, cache_id = str(name).rpartition("cachedContents/")
        if (
            scope
            and not re.fullmatch(r"projects/[^/]+/locations/[^/]+/", scope)
            or not re.fullmatch(r"[a-z0-9-]+", cache_id)
        ):
            raise ApiError(400, f"Invalid CachedContent name: {name}")
        try:
            cache = self.get_cache(cache_id)
            if cache.scope != (scope.rstrip("/") or None):
                raise ApiError(403, f"CachedContent not found (or permission denied): {name}")
        except ApiError:
            if scope:  # Vertex answers a cache that is not there as not found, not as forbidden
                raise ApiError(404, f"CachedContent not found: {name}") from None
            raise
        return cache

    def list_caches(self, scope: str | None = None) -> list[Cache]:
        return [c for c in self._live(self.caches, self.get_cache) if c.scope == scope]

    def _live(self, items: dict[str, Any], get) -> list:
        """Items not yet expired (getting an expired one removes it), newest first."""
        with self.lock:
            ids = list(items)
        out = []
        for item_id in ids:
            try:
                out.append(get(item_id))
            except ApiError:
                pass
        return sorted(out, key=lambda item: item.created, reverse=True)

    def update_cache(self, cache_id: str, body: dict[str, Any]) -> Cache:
        cache = self.get_cache(cache_id)
        now = self.clock.now()
        cache.expires = self._expiry(body, now, default=cache.expires)
        cache.updated = now
        self.save()
        return cache

    def delete_cache(self, cache_id: str) -> None:
        self.get_cache(cache_id)
        with self.lock:
            self.caches.pop(cache_id, None)
        self.save()

    @staticmethod
    def cache_json(cache: Cache) -> dict[str, Any]:
        model = cache.model
        if cache.scope:
            model = f"{cache.scope}/publishers/google/models/{model.removeprefix('models/')}"
        return {
            "name": cache.name,
            "model": model,
            **({"displayName": cache.display_name} if cache.display_name else {}),
            "createTime": rfc3339(cache.created),
            "updateTime": rfc3339(cache.updated),
            "expireTime": rfc3339(cache.expires),
            "usageMetadata": {"totalTokenCount": cache.tokens},
        }

    # ------------------------------------------------------------ answering

    def generate(self, model: str, request: Any, *, vertex: bool = False) -> dict[str, Any]:
        """generateContent, with what the service checks about limits, caches and files."""
        responder.validate_request(request, vertex=vertex)
        found = models.find(model)
        if found is not None:
            _check_limits(model, found[1], request)
        cached_tokens = 0
        name = request.get("cachedContent")
        if name:
            cache = self.named_cache(name)
            if cache.model != model:
                raise ApiError(
                    400,
                    f"Model used by GenerateContent request ({model}) and CachedContent ({cache.model}) "
                    "has to be the same.",
                )
            if any(request.get(k) for k in ("systemInstruction", "tools", "toolConfig")):
                raise ApiError(
                    400,
                    "CachedContent can not be used with GenerateContent request setting "
                    "system_instruction, tools or tool_config.",
                )
            cached_tokens = cache.tokens
            if cache.tools:  # the cache's tools act on the request, as on the service
                request = {**request, "tools": cache.tools}
        if found is not None:
            counted = responder.prompt_tokens(request, self.part_tokens) + cached_tokens
            if refused := refusals.input_tokens(found[1], counted):
                raise ApiError(400, refused)
        for content in request["contents"]:
            for part in content.get("parts") or []:
                self._check_file_part(part)
        response = responder.generate(
            model,
            request,
            cached_tokens=cached_tokens,
            part_tokens=self.part_tokens,
            vertex=vertex,
            file_content=self.file_digest,
        )
        if vertex:  # Vertex says when it answered and on which traffic; the Developer API does not
            response["createTime"] = rfc3339(self.clock.now())
            response["usageMetadata"]["trafficType"] = "ON_DEMAND"
        return self._safety(response)

    def _safety(self, response: dict[str, Any]) -> dict[str, Any]:
        """The safety faults, decided by the request and how often it was asked: blocked, or
        stopped. As on the service, asking again may be answered (a repeat is drawn anew)."""
        first = response["responseId"]
        with self.lock:
            self._answered[first] += 1
            times = self._answered[first]
        ident = first if times == 1 else f"{first}:{times}"
        ratings = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]
        if self.faults.hit(self.faults.prompt_block_rate, "block", ident):
            usage = response["usageMetadata"]
            prompt = usage["promptTokenCount"]
            return {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": ratings},
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                "modelVersion": response["modelVersion"],
                "responseId": response["responseId"],
            }
        if self.faults.hit(self.faults.safety_stop_rate, "safety", ident):
            for candidate in response["candidates"]:
                candidate.update(content={"role": "model"}, finishReason="SAFETY", safetyRatings=ratings)
        return response

    def _check_file_part(self, part: Any) -> None:
        """A part naming an uploaded file fails as the service does when the file is gone."""
        self._part_file(part)

    def _part_file(self, part: Any) -> StoredFile | None:
        if not isinstance(part, dict):
            return None
        data = part.get("fileData") or part.get("file_data") or {}
        uri = data.get("fileUri") or data.get("file_uri") or ""
        if uri.startswith("gs://") or ("/files/" not in uri and not uri.startswith("files/")):
            return None
        return self.get_file(re.split(r"[^a-z0-9-]", uri.split("files/", 1)[1])[0])

    def part_tokens(self, part: dict[str, Any]) -> int:
        """Uploaded files count by their content (text by size, media by the service's rules),
        once per file; inline parts as the responder counts them."""
        data = (part.get("fileData") or part.get("file_data") or {}) if isinstance(part, dict) else {}
        uri = data.get("fileUri") or data.get("file_uri") or ""
        if uri.startswith("gs://"):  # only the Vertex side lets these through
            return self._gcs_tokens(uri, data.get("mimeType") or data.get("mime_type") or "")
        stored = self._part_file(part)
        if stored is None:
            return responder._part_tokens(part)
        if stored.id not in self._media_tokens:  # by the rules batchflow's estimates use
            self._media_tokens[stored.id] = file_tokens(str(self.blob(stored.id)), stored.mime_type)
        return self._media_tokens[stored.id]

    def file_digest(self, uri: str) -> str:
        """The sha256 of the file a request names (an upload or a Cloud Storage object), so that
        an answer does not depend on where the file was put; the URI itself for anything else."""
        if uri not in self._digests:
            if uri.startswith("gs://"):
                content = vertex.gcs(self).cat(uri)
            else:
                stored = self._part_file({"fileData": {"fileUri": uri}})
                if stored is None:
                    return uri
                content = self.blob(stored.id).read_bytes()
            self._digests[uri] = hashlib.sha256(content).hexdigest()
        return self._digests[uri]

    def _gcs_tokens(self, uri: str, mime: str) -> int:
        """A Cloud Storage object named by a Vertex request, counted like an uploaded file."""
        if uri not in self._media_tokens:
            try:
                self._media_tokens[uri] = file_tokens(uri, mime, vertex.gcs(self))
            except FileNotFoundError:
                raise ApiError(400, f"Cannot fetch content from the provided URL: {uri}") from None
        return self._media_tokens[uri]

    def count_tokens(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """countTokens: the same counting as generateContent; a named cache's tokens included."""
        request = body.get("generateContentRequest") or body
        if not isinstance(request, dict) or not request.get("contents"):
            raise ApiError(400, "contents are required")
        counts = responder.prompt_details(request, self.part_tokens)
        answer: dict[str, Any] = {"totalTokens": sum(counts.values())}
        name = request.get("cachedContent")
        if name:
            cached = self.named_cache(name).tokens
            answer.update(totalTokens=answer["totalTokens"] + cached, cachedContentTokenCount=cached)
            answer["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
        answer["promptTokensDetails"] = responder.details(counts)
        return answer

    # ------------------------------------------------------------ batches

    def create_job(
        self,
        model: str,
        kind: str,
        display_name: str | None,
        input_file: str | None,
        inline: list[dict[str, Any]] | None,
        *,
        vertex: dict[str, Any] | None = None,
        job_id: str | None = None,
    ) -> Job:
        count = size = 0
        if input_file is not None or vertex is not None:
            if vertex:
                path = vertex["input"]
            else:
                assert input_file is not None
                path = self.blob(self.get_file(input_file.removeprefix("files/")).id)
            with open(path, "rb") as f:
                for line in f:
                    if line.strip():
                        count, size = count + 1, size + len(line)
        else:
            count = len(inline or [])
            size = sum(len(json.dumps(item)) for item in inline or [])
        if count == 0:
            raise ApiError(400, "Batch input contains no requests")
        tokens = math.ceil(size / responder.CHARS_PER_TOKEN)
        quota = self.faults.enqueued_tokens
        if quota:
            self.list_jobs()  # brings every job's state up to date
        now = self.clock.now()
        with self.lock:
            enqueued = sum(j.tokens for j in self.jobs.values() if j.state not in TERMINAL)
            if quota and enqueued + tokens > quota:
                raise ApiError(
                    429,
                    f"Enqueued token quota exceeded: {enqueued} tokens enqueued, this batch adds "
                    f"{tokens}, the limit is {quota:g}. Try again once running batches finish.",
                )
            seq = max((j.seq for j in self.jobs.values()), default=0) + 1
            job = Job(
                job_id or new_id(),
                model,
                kind,
                display_name,
                now,
                input_file,
                inline,
                count,
                seq,
                updated=now,
                tokens=tokens,
                vertex=vertex,
            )
            self.jobs[job.id] = job
        self.save()
        return job

    def _job_lock(self, job_id: str) -> threading.Lock:
        with self.lock:
            return self._job_locks.setdefault(job_id, threading.Lock())

    def get_job(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"Batch batches/{job_id} not found")
        self._advance(job)
        return job

    def list_jobs(self) -> list[Job]:
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)
        for job in jobs:
            self._advance(job)
        return jobs

    def cancel_job(self, job_id: str) -> None:
        job = self.get_job(job_id)
        with self._job_lock(job_id):
            # The Gemini API has no CANCELLING state on the wire (the SDK knows none):
            # the job keeps its state until the cancel takes effect.
            if job.state not in TERMINAL and job.cancelled_at is None:
                job.cancelled_at = job.updated = self.clock.now()
        self.save()

    def delete_job(self, job_id: str) -> None:
        self.get_job(job_id)
        with self.lock:
            self.jobs.pop(job_id, None)
        self.save()

    def _timeline(self, job: Job) -> tuple[float, float]:
        """When the job starts running and when it would end, in emulator time."""
        start = job.created + PENDING_SECONDS
        return start, start + RUNNING_SECONDS + SECONDS_PER_REQUEST * job.request_count

    def _advance(self, job: Job) -> None:
        with self._job_lock(job.id):
            if job.state in TERMINAL:
                return
            before = job.state
            now = self.clock.now()
            start, end = self._timeline(job)
            stuck = self.faults.hit(self.faults.stay_pending_rate, "pending", job.seq)
            if job.cancelled_at is not None:
                if now >= job.cancelled_at + CANCEL_SECONDS:
                    # Requests finished before the cancel keep their results, as on the service.
                    ran = job.cancelled_at - start
                    done = 0.0 if stuck or ran < 0 else ran / (end - start)
                    self._run(job, limit=int(job.request_count * min(done, 1.0)))
                    self._end(job, "BATCH_STATE_CANCELLED", job.cancelled_at + CANCEL_SECONDS)
            elif self.faults.hit(self.faults.job_expire_rate, "expire", job.seq):
                if now >= job.created + self.faults.expire_after:
                    self._end(job, "BATCH_STATE_EXPIRED", job.created + self.faults.expire_after)
            elif stuck:
                pass
            elif now >= end:
                if self.faults.hit(self.faults.job_fail_rate, "fail", job.seq):
                    if job.vertex is not None:  # Vertex exports the rows it finished: here, half
                        self._run(job, limit=job.request_count // 2)
                    self._end(job, "BATCH_STATE_FAILED", end)
                else:
                    self._run(job)
                    self._end(job, "BATCH_STATE_SUCCEEDED", end)
            elif now >= start and job.state == "BATCH_STATE_PENDING":
                job.state, job.updated = "BATCH_STATE_RUNNING", start
        if job.state != before:
            self.save()

    @staticmethod
    def _end(job: Job, state: str, at: float) -> None:
        job.state, job.ended, job.updated = state, at, at

    def _run(self, job: Job, limit: int | None = None) -> None:
        """Answer the job's requests (the first `limit` of them) and store the results."""
        if job.vertex is not None:
            vertex.run(self, job, limit)
            return
        if job.inline is not None:
            job.inline_responses = [
                self._answer(job, item.get("request"), item.get("metadata"), n)
                for n, item in enumerate(job.inline[:limit])
            ]
            return
        out_id = f"batch-{job.id}"
        assert job.input_file is not None  # neither Vertex nor inline: a file job
        digest = hashlib.sha256()
        size = 0
        with open(self.blob(out_id), "wb") as dst:
            path = self.blob(job.input_file.removeprefix("files/"))
            for line, _, answer in self.answer_lines(job, path, limit):
                out = json.dumps({"key": line.get("key"), **answer}, ensure_ascii=False).encode() + b"\n"
                dst.write(out)
                digest.update(out)
                size += len(out)
        stored = StoredFile(
            out_id,
            None,
            "application/jsonl",
            size,
            base64.b64encode(digest.digest()).decode(),
            self.clock.now(),
            "GENERATED",
        )
        with self.lock:
            self.files[out_id] = stored
        job.output_file = stored.name

    def answer_lines(
        self, job: Job, path: Path, limit: int | None
    ) -> Iterator[tuple[dict[str, Any], Any, dict[str, Any]]]:
        """(line, its request, the answer) for the first `limit` lines of a batch input file; a
        line without a request is answered with the service's per-line error."""
        with open(path, "rb") as src:
            n = 0
            for raw in src:
                if not raw.strip():
                    continue
                n += 1
                if limit is not None and n > limit:
                    return
                try:
                    line = json.loads(raw)
                    request = line.get("request")
                except (ValueError, AttributeError):
                    line, request = {}, None
                if not isinstance(request, dict):
                    job.failed += 1
                    yield line, request, ApiError(400, f"Line {n}: invalid JSON or missing 'request'").body()
                else:
                    yield line, request, self._answer(job, request, None, n)

    def _answer(self, job: Job, request: Any, metadata: Any, n: int) -> dict[str, Any]:
        try:
            if self.faults.hit(self.faults.line_error_rate, "line", job.seq, n):
                raise ApiError(500, "An internal error has occurred. Please retry or report.")
            if job.vertex is not None and request.get("cachedContent"):
                # The docs say batch prediction takes no explicit cache (D1); the wording is ours.
                raise ApiError(
                    400, "Explicit context caches (cachedContent) are not supported in batch prediction."
                )
            if job.kind == "embed":
                response = responder.embed(request)
            else:
                response = self.generate(job.model, request, vertex=job.vertex is not None)
            answer: dict[str, Any] = {"response": response}
            job.succeeded += 1
        except ApiError as exc:
            answer = exc.body()
            job.failed += 1
        if metadata is not None:
            answer["metadata"] = metadata
        return answer

    def job_json(self, job: Job) -> dict[str, Any]:
        kind = "EmbedContentBatch" if job.kind == "embed" else "GenerateContentBatch"
        metadata: dict[str, Any] = {
            "@type": _TYPE + kind,
            "name": job.name,
            "model": job.model,
            **({"displayName": job.display_name} if job.display_name else {}),
            "state": job.state,
            "createTime": rfc3339(job.created),
            "updateTime": rfc3339(job.updated),
        }
        stats = {"requestCount": str(job.request_count)}
        if job.state in TERMINAL:
            metadata["endTime"] = rfc3339(job.ended or job.updated)
            stats.update(successfulRequestCount=str(job.succeeded), failedRequestCount=str(job.failed))
            pending = job.request_count - job.succeeded - job.failed
            if pending:
                stats["pendingRequestCount"] = str(pending)
        else:
            # At work, requests finish at an even pace (the service reports its progress too).
            start, end = self._timeline(job)
            ran = self.clock.now() - start if job.state == "BATCH_STATE_RUNNING" else 0.0
            done = int(job.request_count * min(max(ran / (end - start), 0.0), 1.0))
            stats["pendingRequestCount"] = str(job.request_count - done)
        metadata["batchStats"] = stats
        body: dict[str, Any] = {"name": job.name, "metadata": metadata}
        output: dict[str, Any] | None = None
        if job.output_file:
            output = {"responsesFile": job.output_file}
        elif job.inline_responses is not None:
            key = "inlinedEmbedContentResponses" if job.kind == "embed" else "inlinedResponses"
            output = {key: {"inlinedResponses": job.inline_responses}}
        if output is not None:
            output = {"@type": _TYPE + kind + "Output", **output}
            metadata["output"] = output
            body["response"] = output
        if job.state in TERMINAL:
            body["done"] = True
            if job.state == "BATCH_STATE_FAILED":
                body["error"] = {"code": 13, "message": "Batch job failed: internal error."}
        return body
