"""batchflow: Gemini API Batch Mode workloads as declarative, idempotent pipelines.

The library behind the `batchflow` command (see batchflow/api.py):

    import batchflow

    project = batchflow.load(["pipelines"])          # settings as BATCHFLOW_* gives them, or state=...
    if project.plan(max_usd=25).has_changes:
        result = project.apply(wait=True, max_usd=25)
        assert result.ok, (result.problems, result.errors, result.failed)
"""

__version__ = "0.1.0"

import os as _os

# gcsfs's experimental zonal-bucket support asks a gRPC control plane for every bucket's type
# and logs "Could not determine bucket type..." whenever it may not (most service accounts,
# every local emulator). batchflow needs none of it; a user may still turn it on.
_os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

# Imported when first asked for, so that `batchflow --version` and a `validate` do not pay for
# what they do not use (the SDK alone takes half a second).
_EXPORTS = {
    "load": "api",
    "Project": "api",
    "ApplyResult": "api",
    "Outcome": "run.act",
    "apply_all": "run.act",
    "Backends": "backends",
    "GeminiBackend": "backends.gemini",
    "BatchflowError": "errors",
    "BudgetError": "errors",
    "LockedError": "errors",
    "OutputError": "errors",
    "PolicyError": "errors",
    "RemoteError": "errors",
    "SourceError": "errors",
    "SpecError": "errors",
    "SpecErrors": "errors",
    "StateError": "errors",
    "load_pipelines": "spec.loader",
    "PriceTable": "spec.pricing",
    "load_prices": "spec.pricing",
    "Stores": "spec.project",
    "Action": "run.reconcile",
    "Kind": "run.reconcile",
    "plan": "run.reconcile",
    "scan": "run.reconcile",
    "Settings": "settings",
    "LoadedPipeline": "spec.models",
    "Pipeline": "spec.models",
    "LocalStore": "state.store",
    "StateStore": "state.store",
    "PipelineState": "state.store",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'batchflow' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = [
    "ApplyResult",
    "load",
    "Action",
    "Backends",
    "BatchflowError",
    "BudgetError",
    "GeminiBackend",
    "Kind",
    "LoadedPipeline",
    "LocalStore",
    "StateStore",
    "LockedError",
    "Outcome",
    "OutputError",
    "PolicyError",
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
