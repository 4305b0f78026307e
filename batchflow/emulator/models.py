"""The models the emulator serves: batchflow's catalog (catalog.py, `data/models.yaml`), answered
as the service answers them today. A routed model answers as its target; a shut-down one with
the service's 404. `batchflow emulator --models FILE` (BATCHFLOW_MODELS) adds models.
"""

from __future__ import annotations

from typing import Any

from ..spec.catalog import Model, load_catalog
from .errors import ApiError

__all__ = ["Model", "describe", "find", "listed", "model_json"]


def find(name: str) -> tuple[str, Model] | None:
    """The model that answers a request for `name` (`models/` optional, a versioned name too):
    itself, or where it is routed. None for a name the service does not know; a model that was
    shut down raises the service's 404."""
    _refuse_shut_down(name)
    return load_catalog().answering(name)


def describe(name: str) -> tuple[str, Model] | None:
    """What models.get says of `name`: its own entry, even when another model answers for it."""
    _refuse_shut_down(name)
    return load_catalog().find(name)


def _refuse_shut_down(name: str) -> None:
    status = load_catalog().status(name)
    if status.kind == "shut down":
        raise ApiError(
            404,
            f"This model models/{status.name} is no longer available. Please update your code to use "
            "a newer model for the latest features and improvements.",
        )


def listed() -> list[tuple[str, Model]]:
    """What models.list gives: every model that still answers as itself."""
    catalog = load_catalog()
    answering = ("current", "deprecated")
    return [(name, m) for name, m in catalog.models.items() if catalog.status(name).kind in answering]


def model_json(name: str, model: Model) -> dict[str, Any]:
    """A Model resource as models.get and models.list give it."""
    body: dict[str, Any] = {
        "name": f"models/{name}",
        "version": "001",
        "displayName": model.name,
        "description": f"{model.name}, served by the batchflow emulator.",
        "supportedGenerationMethods": list(model.methods),
    }
    if model.input_tokens is not None:
        body["inputTokenLimit"] = model.input_tokens
    if model.output_tokens is not None:
        body["outputTokenLimit"] = model.output_tokens
    if not model.embedding:
        body.update(temperature=1, topP=0.95, topK=64, maxTemperature=2, thinking=model.thinking is not None)
    return body
