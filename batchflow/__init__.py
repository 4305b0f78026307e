"""batchflow: Gemini API Batch Mode workloads as declarative, idempotent pipelines.

The library behind the `batchflow` command:

    pipelines = load_pipelines([Path("pipelines")])
    store = LocalStore(".batchflow")
    apply_all(pipelines, store, GeminiBackend(Settings()), report=print, wait=True)
"""

__version__ = "0.1.0"

from .apply import Outcome, apply_all
from .errors import (
    BatchflowError,
    LockedError,
    RemoteError,
    SourceError,
    SpecError,
    SpecErrors,
    StateError,
)
from .loader import load_pipelines
from .reconcile import Action, Kind, plan, scan
from .settings import Settings
from .spec import LoadedPipeline, Pipeline
from .state import LocalStore, PipelineState


def __getattr__(name: str):
    # The SDK takes half a second to import; commands that make no API call (validate, plan) skip it.
    if name == "GeminiBackend":
        from .backends.gemini import GeminiBackend

        return GeminiBackend
    raise AttributeError(f"module 'batchflow' has no attribute {name!r}")


__all__ = [
    "Action",
    "BatchflowError",
    "GeminiBackend",
    "Kind",
    "LoadedPipeline",
    "LocalStore",
    "LockedError",
    "Outcome",
    "Pipeline",
    "PipelineState",
    "RemoteError",
    "Settings",
    "SourceError",
    "SpecError",
    "SpecErrors",
    "StateError",
    "apply_all",
    "load_pipelines",
    "plan",
    "scan",
]
