"""The models batchflow knows, as data (`data/models.yaml`): stage, limits, methods, thinking
rules, cache minimums and prices, each with its source and the date it was checked.

`validate` reads it to judge a spec's model, `plan` to price requests, the refusal rules
(refusals.py) for each model's limits, and the emulator to serve `models.list` and answer as
each model does. `BATCHFLOW_MODELS` (a YAML or JSON file of the same shape) adds or overrides
models without a release, as `BATCHFLOW_PRICES` overrides prices.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BatchflowError

Level = Literal["MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH"]
T = TypeVar("T")
GENERATE = ("generateContent", "countTokens", "createCachedContent", "batchGenerateContent")
# What may follow a family's name in a versioned model name: gemini-2.5-flash-001, -latest,
# -preview-05-20 (the service answers those as the family).
_VERSION = re.compile(r"^(\d{3}|latest|(preview|exp)(-[a-z0-9-]+)?)$")


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rates(_Data):
    """USD per 1M tokens at the standard (synchronous) price."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0, description="None: the input price")


class Price(Rates):
    until: date | None = None  # the last day this price holds; None: until further notice
    above_200k: Rates | None = None  # for prompts over 200,000 tokens


class Thinking(_Data):
    levels: tuple[Level, ...] = ()  # thinking_level values taken; none: a budget model
    budget: tuple[int, int] | None = None  # thinking_budget taken besides -1 and (if can_turn_off) 0
    can_turn_off: bool = True
    default: str | None = None  # a level, "dynamic" or "off"


class Model(_Data):
    name: str  # as the service displays it
    stage: Literal["preview", "stable", "deprecated"]
    released: date | None = None
    shutdown: date | None = None  # from this day it no longer answers as itself
    routed_to: str | None = None  # ...but as this model, billed at its prices
    replacement: str | None = None  # what to use instead
    input_tokens: int | None = None
    output_tokens: int | None = None
    methods: tuple[str, ...] = GENERATE
    thinking: Thinking | None = None
    min_cache_tokens: int | None = None
    logprobs: bool = False  # responseLogprobs taken (2.0 models)
    prices: tuple[Price, ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def embedding(self) -> bool:
        return "embedContent" in self.methods or "predict" in self.methods

    def price(self, on: date) -> Price | None:
        """The price in force on `on`."""
        return next((p for p in self.prices if p.until is None or on <= p.until), None)


class Catalog(_Data):
    checked: date
    source: str
    batch_discount: float = Field(0.5, ge=0, le=1)
    models: dict[str, Model]

    def find(self, name: str) -> tuple[str, Model] | None:
        """The model `name` is (`models/` optional), or a versioned name of (gemini-2.5-flash-001)."""
        name = name.removeprefix("models/")
        if name in self.models:
            return name, self.models[name]
        family = max((m for m in self.models if name.startswith(m + "-")), key=len, default=None)
        if family is None or not _VERSION.match(name.removeprefix(family + "-")):
            return None
        return family, self.models[family]

    def status(self, name: str, on: date | None = None) -> Status:
        """What the service does with `name` on `on` (today by default)."""
        on = on or today()
        found = self.find(name)
        if found is None:
            current = [m for m, model in self.models.items() if self.status(m, on).kind == "current"]
            close = difflib.get_close_matches(name.removeprefix("models/"), current, n=1)
            return Status("unknown", name, suggestion=close[0] if close else None)
        canonical, model = found
        if model.shutdown is not None and on >= model.shutdown:
            if model.routed_to:
                return Status("routed", canonical, model, target=model.routed_to, since=model.shutdown)
            return Status("shut down", canonical, model, target=model.replacement, since=model.shutdown)
        if model.stage == "deprecated":
            return Status("deprecated", canonical, model, target=model.replacement, since=model.shutdown)
        return Status("current", canonical, model)

    def answering(self, name: str, on: date | None = None) -> tuple[str, Model] | None:
        """The model that answers a request for `name`: itself, or where it is routed."""
        status = self.status(name, on)
        if status.kind == "routed" and status.target in self.models:
            return status.target, self.models[status.target]
        if status.kind in ("unknown", "shut down") or status.model is None:
            return None
        return status.name, status.model

    def price(self, name: str, on: date | None = None) -> Price | None:
        """What a request for `name` costs on `on`: a routed model is billed at its target's."""
        found = self.answering(name, on)
        return found[1].price(on or today()) if found else None


@dataclass(frozen=True)
class Status:
    kind: Literal["current", "deprecated", "routed", "shut down", "unknown"]
    name: str  # the catalog's name for it (or the name asked, when unknown)
    model: Model | None = None
    target: str | None = None  # routed: who answers; deprecated, shut down: the replacement
    since: date | None = None  # the shutdown day
    suggestion: str | None = None  # unknown: the closest current name


def today() -> date:
    return datetime.now(UTC).date()


@functools.cache
def _shipped() -> Catalog:
    text = resources.files("batchflow").joinpath("data/models.yaml").read_text(encoding="utf-8")
    return Catalog.model_validate(yaml.safe_load(text))


def load_catalog(override: str | os.PathLike[str] | None = None) -> Catalog:
    """The shipped catalog, with the models of `override` (default: BATCHFLOW_MODELS) on top."""
    override = override or os.environ.get("BATCHFLOW_MODELS") or None
    if override is None:
        return _shipped()
    return _with_override(str(override))


@functools.cache
def _with_override(path: str) -> Catalog:
    base = _shipped()
    models = read_override(
        path,
        "model catalog",
        lambda doc: {name: Model.model_validate(entry) for name, entry in (doc.get("models") or {}).items()},
    )
    return base.model_copy(update={"models": {**base.models, **models}, "source": f"{base.source}; {path}"})


def read_override(path: str | os.PathLike[str], what: str, parse: Callable[[dict], T]) -> T:
    """A user's YAML or JSON file that overrides shipped data (BATCHFLOW_MODELS,
    BATCHFLOW_PRICES), parsed by `parse`; any problem is one line naming the file and field."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(doc, dict):
            raise TypeError("a mapping with `models` is expected")
        return parse(doc)
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        why = f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else str(exc).splitlines()[0]
        raise BatchflowError(f"{path}: {what}: {why}") from None


def model_warning(catalog: Catalog, name: str, on: date | None = None) -> str | None:
    """What a user should hear about a spec naming `name`: None for a current model."""
    status = catalog.status(name, on)
    if status.kind == "unknown":
        hint = f"; did you mean {status.suggestion!r}?" if status.suggestion else ""
        return f"{name!r} is not a model batchflow knows{hint} (plan asks the service about it)"
    if status.kind == "routed":
        price = catalog.price(name, on)
        cost = f", at {rates(price)}" if price else ", unpriced"
        return f"{name!r} was shut down on {status.since}; its requests are answered by {status.target}{cost}"
    if status.kind == "deprecated":
        when = f"; it shuts down on {status.since}" if status.since else ""
        instead = f"; use {status.target}" if status.target else ""
        return f"{name!r} is deprecated{when}{instead}"
    return None


def shut_down(catalog: Catalog, name: str, on: date | None = None) -> str | None:
    """Why a spec may not name `name`: the service no longer answers it."""
    status = catalog.status(name, on)
    if status.kind != "shut down":
        return None
    instead = f"; use {status.target}" if status.target else ""
    return f"{name!r} was shut down on {status.since} and answers nothing any more{instead}"


def rates(price: Rates) -> str:
    """`$0.75 / $3.75 per 1M tokens in / out (standard price; Batch Mode: half)`."""
    prices = f"{_money(price.input)} / {_money(price.output)}"
    return f"{prices} per 1M tokens in / out (standard price; Batch Mode: half)"


def _money(amount: float) -> str:
    return f"${amount:.2f}" if round(amount, 2) == amount else f"${amount:g}"
