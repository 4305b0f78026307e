"""What requests cost: the price table shipped as data, local token estimates, and the arithmetic.

Estimates are deliberately simple and documented (docs/running.md, "What it costs"): about four
characters a token of the request as sent, and each file it or the cache names counted by the
service's rules (tokens.py: text by its size, images by tiles, PDFs by pages, audio and video
by seconds). `plan --count-tokens` corrects the text part with the API's countTokens.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import BaseModel, Field

from ..prepare.render import FILE_PLACEHOLDER, FileRef
from .catalog import load_catalog, read_override, today
from .tokens import CHARS_PER_TOKEN, PART_TOKENS

# The batch input line around the request: {"key": "<64 hex>", "request": ...}.
_ENVELOPE_CHARS = len('{"key": "", "request": }') + 64
_FILE_REF = re.compile(re.escape(FILE_PLACEHOLDER) + r"([0-9a-f]{64})")


class ModelPrice(BaseModel):
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float = Field(ge=0)


class PriceTable(BaseModel):
    checked: str
    source: str
    unit: str = "USD per 1M tokens, synchronous (standard) price"
    batch_discount: float = Field(0.5, ge=0, le=1)
    models: dict[str, ModelPrice]

    def of(self, model: str) -> ModelPrice | None:
        """The price of `model`, or of the longest listed name it starts with (a dated version)."""
        model = model.removeprefix("models/")
        names = [name for name in self.models if model == name or model.startswith(name + "-")]
        return self.models[max(names, key=len)] if names else None

    def cost(self, model: str, tokens: Tokens, tier: str = "batch") -> float | None:
        """USD on `tier` (Batch Mode's prices by default); None for a model the table does not know."""
        price = self.of(model)
        if price is None:
            return None
        full = tokens.input * price.input + tokens.output * price.output + tokens.cached * price.cached_input
        share = (1 - self.batch_discount) if tier in ("batch", "flex") else TIER_PRICE[tier]
        return full / 1e6 * share


# What the synchronous tiers cost against the standard price (docs/tiers.md): Flex is Batch
# Mode's half; Priority is "75-100% more than Standard" (ai.google.dev, optimization), taken at
# its top so that a budget never counts it short.
TIER_PRICE = {"standard": 1.0, "priority": 2.0}
TIER_NAMES = {"batch": "Batch Mode", "flex": "Flex", "standard": "Standard", "priority": "Priority"}


@dataclass
class Tokens:
    input: int = 0  # input tokens not served from a context cache
    output: int = 0
    cached: int = 0

    @classmethod
    def from_usage(cls, usage: dict[str, int]) -> Tokens:
        """From result usage, where the prompt count includes the cached tokens."""
        cached = usage.get("cached", 0)
        return cls(usage.get("prompt", 0) - cached, usage.get("output", 0), cached)


def load_prices(override: Path | None = None, on: date | None = None) -> PriceTable:
    """Each model's price on `on` (today), from the model catalog (a routed model at its
    target's), with the models of a price override file (YAML or JSON, same shape) on top."""
    catalog = load_catalog()
    on = on or today()
    models = {}
    for name in catalog.models:
        price = catalog.price(name, on)
        if price is not None:
            cached = price.input if price.cached_input is None else price.cached_input
            models[name] = ModelPrice(input=price.input, output=price.output, cached_input=cached)
    table = PriceTable(
        checked=str(catalog.checked),
        source=catalog.source,
        batch_discount=catalog.batch_discount,
        models=models,
    )
    if override is None:
        return table
    doc, extra = read_override(
        override,
        "price table",
        lambda doc: (
            doc,
            PriceTable.model_validate(
                {"checked": "override", "source": str(override), **doc, "models": doc.get("models", {})}
            ),
        ),
    )
    return table.model_copy(
        update={
            "models": {**table.models, **extra.models},
            "batch_discount": doc.get("batch_discount", table.batch_discount),
            "checked": doc.get("checked", table.checked),
            "source": f"{table.source}, overridden by {override}",
        }
    )


def estimate_line(line: str, files: Mapping[str, FileRef] | None = None) -> int:
    """Input tokens of one batch input line, estimated locally (`files`: see _parts)."""
    return max(1, math.ceil((len(line) - _ENVELOPE_CHARS) / CHARS_PER_TOKEN)) + file_part_tokens(line, files)


def estimate_text(value: object, files: Mapping[str, FileRef] | None = None) -> int:
    """Tokens of a JSON value (a cache's contents), estimated locally (`files`: see _parts)."""
    text = json.dumps(value)
    return math.ceil(len(text) / CHARS_PER_TOKEN) + file_part_tokens(text, files)


def file_part_tokens(text: str, files: Mapping[str, FileRef] | None) -> int:
    """Tokens of the file parts in `text`: each file the renderer saw (`files`, by digest)
    as the service counts it, any other (a Files API name) as one image."""
    parts = text.count('"fileData"')
    if not parts:
        return 0
    counted = [files[d].tokens for d in _FILE_REF.findall(text) if d in files] if files else []
    return sum(counted) + (parts - len(counted)) * PART_TOKENS


def shards_cost(prices: PriceTable, model: str, shards: list) -> float | None:
    """What the requests of these shards (state.store.Shard) cost, each at the prices of its
    own model and tier; None if one's model has no price."""
    costs = [prices.cost(s.model or model, Tokens.from_usage(s.usage), s.tier or "batch") for s in shards]
    return None if None in costs else sum(c for c in costs if c is not None)


def usd(amount: float | None, *, apart_from: float | None = None) -> str:
    """Dollars, to the cent, or to two significant digits below a cent ($0.0000012, never
    $0.0000); with `apart_from`, with as many digits as it takes to tell the two apart."""
    if amount is None:
        return "unpriced"
    digits = 2 if amount >= 0.01 or amount == 0 else min(10, 1 - math.floor(math.log10(amount)))
    if apart_from is not None and apart_from != amount:
        while digits < 10 and round(amount, digits) == round(apart_from, digits):
            digits += 1
    return f"${amount:,.{digits}f}"
