"""Fault injection: deterministic under a seed, set by `--faults` or the admin endpoint."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class Faults:
    seed: int = 0
    line_error_rate: float = 0.0  # share of batch lines answered with a 500 error
    job_fail_rate: float = 0.0  # share of jobs that end FAILED
    job_expire_rate: float = 0.0  # share of jobs that never run and end EXPIRED
    stay_pending_rate: float = 0.0  # share of jobs that stay PENDING until cancelled
    prompt_block_rate: float = 0.0  # share of prompts blocked (promptFeedback.blockReason SAFETY)
    safety_stop_rate: float = 0.0  # share of answers stopped with finishReason SAFETY
    rate_limit_rate: float = 0.0  # share of API calls answered 429 RESOURCE_EXHAUSTED
    unavailable_rate: float = 0.0  # share of API calls answered 503 UNAVAILABLE
    flex_shed_rate: float = 0.0  # share of Flex generateContent calls shed (503): best effort
    # generateContent calls a tier takes a minute of emulator time (0: no limit); more are 429
    flex_rpm: float = 0.0
    standard_rpm: float = 0.0
    priority_rpm: float = 0.0
    file_ttl: float = 48 * 3600.0  # emulator seconds a file lives (the service keeps files 48 h)
    expire_after: float = 24 * 3600.0  # emulator seconds before a job that never ran expires
    latency: float = 0.0  # real seconds added to every API call
    # Input tokens that PENDING and RUNNING jobs may hold at once (0: no limit); a create
    # beyond it is answered 429 RESOURCE_EXHAUSTED, as the service's enqueued-token quota is.
    enqueued_tokens: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Faults:
        """`line_error_rate=0.1,job_fail_rate=0.2,seed=7` (empty: no faults)."""
        values: dict[str, Any] = {}
        known = {f.name: f.type for f in fields(cls)}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in known:
                raise ValueError(f"unknown fault {item!r}; known: {', '.join(known)}")
            try:
                values[name] = int(value) if name == "seed" else float(value)
            except ValueError:
                raise ValueError(f"fault {name} needs a number, got {value!r}") from None
        return cls(**values).checked()

    def update(self, values: dict[str, Any]) -> None:
        merged = {**asdict(self), **values}
        unknown = set(values) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        checked = Faults(**merged).checked()
        for name, value in asdict(checked).items():
            setattr(self, name, value)

    def checked(self) -> Faults:
        for name, value in asdict(self).items():
            if name.endswith("_rate") and not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
            if name != "seed" and value < 0:
                raise ValueError(f"{name} must not be negative")
        return self

    def hit(self, rate: float, *ident: object) -> bool:
        """Whether the fault at `rate` strikes the thing named by `ident`; same answer every time."""
        if rate <= 0:
            return False
        digest = hashlib.sha256(":".join(map(str, (self.seed, *ident))).encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < rate
