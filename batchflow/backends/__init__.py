"""Backends: the services that run batch jobs, the Gemini Developer API (gemini.py) and Vertex AI
batch prediction (vertex.py), behind one interface; the reconciler never learns which it drives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..errors import RemoteError, SpecError
from ..lazy import Lazy

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..settings import Settings
    from ..spec.models import LoadedPipeline
    from ..spec.project import Stores
    from .base import Backend, Generated, Job
    from .rest import Generator, JobReader


class Backends:
    """The backend of each pipeline: its spec's `backend`, else BATCHFLOW_BACKEND; one client
    per kind and staging prefix, made when first needed (the SDK is slow to import)."""

    def __init__(self, settings: Settings, stores: Stores) -> None:
        self.settings = settings
        self.stores = stores
        self._made: dict[tuple[str, str | None], Backend] = {}

    def kind(self, pipeline: LoadedPipeline) -> str:
        return pipeline.spec.backend or self.settings.backend

    def takes_inline(self, pipeline: LoadedPipeline) -> bool:
        """Whether the pipeline's backend takes requests in the create call, known without
        making it (Vertex batch prediction reads Cloud Storage only)."""
        return self.kind(pipeline) != "vertex"

    def __call__(self, pipeline: LoadedPipeline) -> Backend:
        kind = self.kind(pipeline)
        staging = staging_of(pipeline, self.stores) if kind == "vertex" else None
        # Made on first use: an apply that finds nothing to do (a finished pipeline, a poll
        # answered by the state) never imports the SDK, which costs most of a second; and a
        # Developer API job is read over plain HTTP, so a poll of jobs at work does not either.
        if kind == "vertex":
            return cast("Backend", Lazy(lambda: self._make(kind, staging)))
        return cast("Backend", _ReadsJobsOverHttp(lambda: self._make(kind, staging), self.settings))

    def _make(self, kind: str, staging: str | None) -> Backend:
        if (kind, staging) not in self._made:
            if kind == "vertex":
                from .vertex import VertexBackend

                assert staging is not None  # every vertex pipeline has one (staging_of)
                self._made[kind, staging] = VertexBackend(self.settings, staging)
            else:
                from .gemini import GeminiBackend

                self._made[kind, staging] = GeminiBackend(self.settings)
        return self._made[kind, staging]


class _ReadsJobsOverHttp(Lazy):
    """The Developer API backend, made when first needed, except for reading a job."""

    def __init__(self, make: Callable[[], Backend], settings: Settings) -> None:
        super().__init__(make)
        self._settings = settings
        self._jobs: JobReader | None = None
        self._generator: Generator | None = None

    def get(self, name: str) -> Job:
        return self._reader().get(name)

    def stats(self, name: str) -> tuple[int, int] | None:
        return self._reader().stats(name)

    def generate(self, model: str, request: dict[str, Any], tier: str) -> Generated:
        if self._generator is None:
            from .rest import Generator

            self._generator = Generator(self._settings)
        return self._generator.generate(model, request, tier)

    def _reader(self) -> JobReader:
        if self._jobs is None:
            from .rest import JobReader

            self._jobs = JobReader(self._settings)
        return self._jobs


def staging_of(pipeline: LoadedPipeline, stores: Stores) -> str:
    """Where a Vertex pipeline's shards and outputs live: batch.staging, else beside its state."""
    if pipeline.spec.batch.staging:
        return pipeline.spec.batch.staging.rstrip("/")
    location = stores.location(pipeline)
    if location.startswith("gs://"):
        return f"{location.rstrip('/')}/staging"
    raise SpecError(
        "the vertex backend needs a gs:// prefix for shards and outputs: set batch.staging, "
        "or keep the state in a gs:// bucket",
        file=str(pipeline.path),
        field="batch.staging",
    )


_ASKED: set[str] = set()  # models the service was asked about in this process and knew


def confirm_model(pipeline: LoadedPipeline, backend: Backend) -> None:
    """A model the catalog does not know may be newer than batchflow: ask the service (models.get)
    before anything is uploaded, and stop if it does not know the model either."""
    from ..spec.catalog import load_catalog

    model = pipeline.spec.model
    status = load_catalog().status(model)
    if status.kind != "unknown" or model in _ASKED:
        return
    try:
        backend.get_model(model)
    except RemoteError as exc:
        if exc.code != 404:
            raise
        hint = f"; did you mean {status.suggestion!r}?" if status.suggestion else ""
        raise SpecError(
            f"{model!r} is a model neither batchflow nor the service knows (models.get: 404){hint}",
            file=str(pipeline.path),
            field="model",
        ) from None
    _ASKED.add(model)
