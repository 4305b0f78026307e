"""A local Gemini API emulator speaking the real wire protocol (files, batches, generateContent)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .faults import Faults

if TYPE_CHECKING:
    from .server import EmulatorServer, serve

__all__ = ["EmulatorServer", "Faults", "serve"]


def __getattr__(name: str):
    # The server (uvicorn, starlette) is imported when used, so that `validate` can read the
    # model list (emulator.models) without paying for it.
    if name in ("EmulatorServer", "serve"):
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
