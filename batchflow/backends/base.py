"""What the rest of batchflow asks of a service: the `Backend` protocol both surfaces keep
(`gemini.py`, the Developer API; `vertex.py`, Vertex AI batch prediction), and the job it reads.

Nothing here imports the SDK, so code that only names these types starts fast.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..state.store import JOB_ENDED, ErrorInfo

# One call's answer or error, as a result line holds it; the tier that served it; calls taken.
Generated = tuple[dict[str, Any], str | None, int]


@dataclass(frozen=True)
class Job:
    name: str
    display_name: str | None
    state: str  # JOB_STATE_*
    result_file: str | None
    error: ErrorInfo | None = None

    @property
    def done(self) -> bool:
        return self.state in JOB_ENDED


class Backend(Protocol):
    """One service surface. Every call raises `RemoteError` (with `transient` set when trying
    again may help), never an SDK type."""

    #: Whether small jobs may travel in the create call (`batch.inline_below`).
    takes_inline: bool

    def reads_in_place(self, path: str) -> bool:
        """Whether a request file at `path` is named where it is instead of uploaded."""
        ...

    # ------------------------------------------------------------ files
    def upload(self, path: Path, display_name: str) -> str: ...
    def upload_file(self, path: Path, mime_type: str, display_name: str) -> tuple[str, str]: ...
    def file_exists(self, name: str) -> bool: ...
    def find_files(self, display_names: Collection[str]) -> list[str]: ...
    def delete_file(self, name: str) -> None: ...
    def download(self, file_name: str, destination: Path) -> None: ...

    # ------------------------------------------------------------ jobs
    def create(self, model: str, file_name: str, display_name: str, *, embed: bool = False) -> Job: ...
    def create_inline(self, model: str, requests: list[tuple[str, dict]], display_name: str) -> Job: ...
    def download_inline(self, name: str, destination: Path) -> None: ...
    def get(self, name: str) -> Job: ...
    def find(self, display_name: str) -> Job | None: ...
    def stats(self, name: str) -> tuple[int, int] | None: ...
    def cancel(self, name: str) -> None: ...
    def delete_job(self, name: str) -> None: ...

    # ------------------------------------------------------------ context caches
    def create_cache(self, model: str, body: dict[str, Any], ttl: float, display_name: str) -> str: ...
    def find_cache(self, display_name: str) -> str | None: ...
    def keep_cache(self, name: str, ttl: float) -> bool: ...
    def delete_cache(self, name: str) -> None: ...

    # ------------------------------------------------------------ synchronous tiers
    def generate(self, model: str, request: dict[str, Any], tier: str) -> Generated:
        """One generateContent call on `tier` (flex), retried while the service sheds it: the
        answer as a result line holds it ({"response": ...} or {"error": ...}), and the tier
        that served it."""
        ...

    # ------------------------------------------------------------ models
    def get_model(self, model: str) -> None: ...
    def count_tokens(self, model: str, contents: list[dict]) -> int: ...
