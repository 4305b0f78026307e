"""The emulator's world: a clock, uploaded and generated files, and batch jobs.

Jobs advance lazily: whenever a job is read, its state is worked out from the
emulator clock, and a job that has reached its end gets its results then.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import responder
from .errors import ApiError

MAX_FILE_BYTES = 2 * 1024**3  # the Files API's limit per file
FILE_RETENTION = 48 * 3600  # seconds the service keeps a file
PENDING_SECONDS = 30.0  # a job waits this long before it runs ...
RUNNING_SECONDS = 60.0  # ... then runs this long, plus per request:
SECONDS_PER_REQUEST = 0.05
TERMINAL = {
    "BATCH_STATE_SUCCEEDED",
    "BATCH_STATE_FAILED",
    "BATCH_STATE_CANCELLED",
    "BATCH_STATE_EXPIRED",
}


class Clock:
    """Emulator time: runs `speed` times faster than real time, and can be pushed forward."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._real0 = time.time()
        self._offset = 0.0

    def now(self) -> float:
        return self._real0 + (time.time() - self._real0) * self.speed + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    path: Path
    size: int
    mime_type: str
    display_name: str | None
    name: str | None
    received: int = 0


@dataclass
class Job:
    id: str
    model: str
    display_name: str | None
    created: float
    input_file: str | None  # files/<id>
    inline: list[dict[str, Any]] | None
    request_count: int
    state: str = "BATCH_STATE_PENDING"
    updated: float = 0.0
    ended: float | None = None
    output_file: str | None = None
    inline_responses: list[dict[str, Any]] | None = None
    succeeded: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return f"batches/{self.id}"


class Store:
    def __init__(self, data_dir: Path | None = None, speed: float = 1.0) -> None:
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="batchflow-emulator-")
        self.root = Path(data_dir) if data_dir else Path(self._tmp.name)
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)
        self.clock = Clock(speed)
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self.lock = threading.RLock()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

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
        upload = Upload(new_id(), self.root / "uploads" / new_id(), size, mime_type, display_name, name)
        upload.path.touch()
        with self.lock:
            self.uploads[upload.id] = upload
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
        return stored

    def get_file(self, file_id: str) -> StoredFile:
        with self.lock:
            stored = self.files.get(file_id)
            if stored is not None and self.clock.now() > stored.created + FILE_RETENTION:
                self._delete_file(file_id)
                stored = None
        if stored is None:
            raise ApiError(
                403, f"You do not have permission to access the File {file_id} or it may not exist."
            )
        return stored

    def list_files(self) -> list[StoredFile]:
        with self.lock:
            ids = list(self.files)
        out = []
        for file_id in ids:
            try:
                out.append(self.get_file(file_id))
            except ApiError:
                pass
        return sorted(out, key=lambda f: f.created, reverse=True)

    def delete_file(self, file_id: str) -> None:
        self.get_file(file_id)
        with self.lock:
            self._delete_file(file_id)

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
            "expirationTime": rfc3339(stored.created + FILE_RETENTION),
            "sha256Hash": stored.sha256,
            "uri": f"{base_url}/v1beta/{stored.name}",
            "downloadUri": f"{base_url}/v1beta/{stored.name}:download?alt=media",
            "state": "ACTIVE",
            "source": stored.source,
        }

    # ------------------------------------------------------------ batches

    def create_job(
        self,
        model: str,
        display_name: str | None,
        input_file: str | None,
        inline: list[dict[str, Any]] | None,
    ) -> Job:
        if input_file is not None:
            stored = self.get_file(input_file.removeprefix("files/"))
            with open(self.blob(stored.id), "rb") as f:
                count = sum(1 for line in f if line.strip())
        else:
            count = len(inline or [])
        if count == 0:
            raise ApiError(400, "Batch input contains no requests")
        now = self.clock.now()
        job = Job(new_id(), model, display_name, now, input_file, inline, count, updated=now)
        with self.lock:
            self.jobs[job.id] = job
        return job

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
        with job.lock:
            if job.state not in TERMINAL:
                job.state, job.ended = "BATCH_STATE_CANCELLED", self.clock.now()
                job.updated = job.ended

    def delete_job(self, job_id: str) -> None:
        self.get_job(job_id)
        with self.lock:
            self.jobs.pop(job_id, None)

    def _advance(self, job: Job) -> None:
        with job.lock:
            if job.state in TERMINAL:
                return
            elapsed = self.clock.now() - job.created
            running_for = RUNNING_SECONDS + SECONDS_PER_REQUEST * job.request_count
            if elapsed < PENDING_SECONDS:
                return
            if elapsed < PENDING_SECONDS + running_for:
                if job.state != "BATCH_STATE_RUNNING":
                    job.state, job.updated = "BATCH_STATE_RUNNING", job.created + PENDING_SECONDS
                return
            self._run(job)
            job.state = "BATCH_STATE_SUCCEEDED"
            job.ended = job.updated = job.created + PENDING_SECONDS + running_for

    def _run(self, job: Job) -> None:
        if job.inline is not None:
            job.inline_responses = []
            for item in job.inline:
                job.inline_responses.append(self._answer(job, item.get("request"), item.get("metadata")))
            return
        out_id = f"batch-{job.id}"
        path = self.blob(out_id)
        digest = hashlib.sha256()
        size = 0
        with (
            open(self.blob(job.input_file.removeprefix("files/")), "rb") as src,
            open(path, "wb") as dst,
        ):
            for n, raw in enumerate(src, 1):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                    key, request = line.get("key"), line.get("request")
                except (ValueError, AttributeError):
                    key, request = None, None
                if request is None:
                    answer = {
                        "error": {
                            "code": 400,
                            "message": f"Line {n}: invalid JSON or missing request",
                            "status": "INVALID_ARGUMENT",
                        }
                    }
                    job.failed += 1
                else:
                    answer = self._answer(job, request, None)
                out = json.dumps({"key": key, **answer}, ensure_ascii=False).encode() + b"\n"
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

    def _answer(self, job: Job, request: Any, metadata: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = {"response": responder.generate(job.model, request)}
            job.succeeded += 1
        except ApiError as exc:
            answer = exc.body()
            job.failed += 1
        if metadata is not None:
            answer["metadata"] = metadata
        return answer

    def job_json(self, job: Job) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
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
        else:
            stats["pendingRequestCount"] = str(job.request_count)
        metadata["batchStats"] = stats
        body: dict[str, Any] = {"name": job.name, "metadata": metadata}
        output: dict[str, Any] | None = None
        if job.output_file:
            output = {"responsesFile": job.output_file}
        elif job.inline_responses is not None:
            output = {"inlinedResponses": {"inlinedResponses": job.inline_responses}}
        if output is not None:
            output = {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
                **output,
            }
            metadata["output"] = output
            body["response"] = output
        if job.state in TERMINAL:
            body["done"] = True
        return body
