"""An object made on first use, for what is slow to make and often not needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Lazy:
    """Stands for what `make` returns, made at the first attribute asked of it. `close` only
    closes what was made: closing what never was costs nothing."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._made: Any = None

    def __getattr__(self, name: str):
        if self._made is None:
            self._made = self._make()
        return getattr(self._made, name)

    def close(self) -> None:
        if self._made is not None:
            self._made.close()
