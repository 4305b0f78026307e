"""Durations (`90m`, `2h`, `1h30m`) and sizes (`500MB`, `1GiB`) as people write them in specs."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)")
_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[dhms]\s*)+$")
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_BYTES = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_duration(value: object) -> float:
    """Seconds in `value`: a number of seconds, or text such as `90s`, `15m`, `2h`, `1d`, `1h30m`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value):
        seconds = sum(float(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    else:
        raise ValueError(f"invalid duration {value!r}: use a number with s, m, h or d, e.g. 90m or 2h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: object) -> int:
    """Bytes in `value`: a number of bytes, or text such as `500MB` (10^6) or `1GiB` (2^30)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 500MB or 1GB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value)) if isinstance(value, str | float) else None
        if not match:
            raise ValueError(f"invalid size {value!r}: use a number with B, KB, MB, GB (or KiB, MiB, GiB)")
        size = int(float(match.group(1)) * _BYTES[(match.group(2) or "B").upper()])
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "type": ["string", "number"],
            "pattern": r"^\s*(\d+(\.\d+)?\s*[dhms]\s*)+$",
            "description": "Seconds, or e.g. 90s, 15m, 2h, 1d, 1h30m.",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "type": ["string", "integer"],
            "pattern": r"^\s*\d+(\.\d+)?\s*([KMGTkmgt][iI]?[bB]|[bB])?\s*$",
            "description": "Bytes, or e.g. 500MB, 1GB (powers of 10), 512MiB, 1GiB (powers of 2).",
        }
    ),
]


def plural(count: int, word: str) -> str:
    """`word`, or its plural for any count but one: "1 request", "3 requests"."""
    return word if count == 1 else word + "s"
