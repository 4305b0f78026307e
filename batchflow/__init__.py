"""batchflow: Gemini API Batch Mode workloads as declarative, idempotent pipelines.

The library behind the `batchflow` command:

    pipelines = load_pipelines([Path("pipelines")])
    outcomes = apply_all(pipelines, stores := Stores(), Backends(Settings(), stores), report=print, wait=True)
    failed = [o for o in outcomes if o.failed]  # beyond the errors policy: `apply` exits 3
"""

__version__ = "0.1.0"

import os as _os

# gcsfs's experimental zonal-bucket support asks a gRPC control plane for every bucket's type
# and logs "Could not determine bucket type..." whenever it may not (most service accounts,
# every local emulator). batchflow needs none of it; a user may still turn it on.
_os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from .apply import Outcome, apply_all
from .backends import Backends
from .errors import (
    BatchflowError,
    BudgetError,
    LockedError,
    OutputError,
    RemoteError,
    SourceError,
    SpecError,
    SpecErrors,
    StateError,
)
from .loader import load_pipelines
from .pricing import PriceTable, load_prices
from .project import Project, Stores
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
    "Backends",
    "BatchflowError",
    "BudgetError",
    "GeminiBackend",
    "Kind",
    "LoadedPipeline",
    "LocalStore",
    "LockedError",
    "Outcome",
    "OutputError",
    "Pipeline",
    "PipelineState",
    "PriceTable",
    "Project",
    "RemoteError",
    "Settings",
    "SourceError",
    "SpecError",
    "SpecErrors",
    "StateError",
    "Stores",
    "apply_all",
    "load_pipelines",
    "load_prices",
    "plan",
    "scan",
]
