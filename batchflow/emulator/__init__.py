"""A local Gemini API emulator speaking the real wire protocol (files, batches, generateContent)."""

from .faults import Faults
from .server import EmulatorServer, serve

__all__ = ["EmulatorServer", "Faults", "serve"]
