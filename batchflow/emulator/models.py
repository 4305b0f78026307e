"""The models the emulator serves, with the limits the service documents for them; kept here
only, as data (see ../shared/gemini-batch-protocol.md, "Model limits and methods").

`validate` reads this list too, to warn about a model name it does not know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_VERSION = re.compile(r"^(\d{3}|latest|(preview|exp)(-[a-z0-9-]+)?)$")  # what follows a family's name
GENERATE = ("generateContent", "countTokens", "createCachedContent", "batchGenerateContent")
EMBED = ("embedContent", "countTokens", "asyncBatchEmbedContent", "batchEmbedContents")


@dataclass(frozen=True)
class Model:
    display_name: str
    input_tokens: int
    output_tokens: int
    methods: tuple[str, ...]
    thinking: bool = False
    min_cache_tokens: int = 1024  # the smallest context cache it accepts
    thinking_budget: tuple[int, int] = (0, 0)  # the budgets it accepts besides -1 (dynamic) and 0
    thinking_off: bool = True  # whether a budget of 0 turns thinking off (2.5 Pro's cannot)
    logprobs: bool = False  # responseLogprobs accepted (2.0 models)

    @property
    def embedding(self) -> bool:
        return "embedContent" in self.methods


MODELS = {
    # Pro cannot turn thinking off: its budgets start at 128.
    "gemini-2.5-pro": Model(
        "Gemini 2.5 Pro",
        1_048_576,
        65_536,
        GENERATE,
        True,
        min_cache_tokens=4096,
        thinking_budget=(128, 32_768),
        thinking_off=False,
    ),
    "gemini-2.5-flash": Model(
        "Gemini 2.5 Flash", 1_048_576, 65_536, GENERATE, True, thinking_budget=(1, 24_576)
    ),
    "gemini-2.5-flash-lite": Model(
        "Gemini 2.5 Flash-Lite", 1_048_576, 65_536, GENERATE, True, thinking_budget=(512, 24_576)
    ),
    "gemini-2.0-flash": Model("Gemini 2.0 Flash", 1_048_576, 8_192, GENERATE, logprobs=True),
    "gemini-2.0-flash-lite": Model("Gemini 2.0 Flash-Lite", 1_048_576, 8_192, GENERATE, logprobs=True),
    "gemini-embedding-001": Model("Gemini Embedding 001", 2_048, 1, EMBED),
}


def find(name: str) -> tuple[str, Model] | None:
    """The model `name` (`models/` optional) is, or a dated version of (`gemini-2.5-flash-001`,
    `gemini-2.5-flash-preview-05-20`); None for a name the service would not know."""
    name = name.removeprefix("models/")
    if name in MODELS:
        return name, MODELS[name]
    family = max((m for m in MODELS if name.startswith(m + "-")), key=len, default=None)
    if family is None or not _VERSION.match(name.removeprefix(family + "-")):
        return None
    return family, MODELS[family]


def model_json(name: str, model: Model) -> dict[str, Any]:
    """A Model resource as models.get and models.list give it."""
    body: dict[str, Any] = {
        "name": f"models/{name}",
        "version": "001",
        "displayName": model.display_name,
        "description": f"{model.display_name}, served by the batchflow emulator.",
        "inputTokenLimit": model.input_tokens,
        "outputTokenLimit": model.output_tokens,
        "supportedGenerationMethods": list(model.methods),
    }
    if not model.embedding:
        body.update(temperature=1, topP=0.95, topK=64, maxTemperature=2, thinking=model.thinking)
    return body
