"""What the service refuses in a request, in the service's own words.

One set of rules for both sides: `validate` and `plan` find these before anything is
uploaded (naming the spec's field, or the record's file, line and key), and the emulator
answers them with a 400, so a dry run fails as production would. Each message is the one
the service is seen to send (docs/protocol.md, "Refusals").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .catalog import Model

# MIME types the service refuses (office documents, archives); "jsonl" is what the batch
# docs upload input files as, and is taken, as is any other type/subtype.
_REFUSED_MIME = ("application/vnd.", "application/msword", "application/zip", "application/cu-seeme")


def mime_type(mime: str) -> str | None:
    if mime == "jsonl" or ("/" in mime and not mime.startswith(_REFUSED_MIME)):
        return None
    return f"Unsupported MIME type: {mime}"


def input_tokens(model: Model, count: int) -> str | None:
    if model.input_tokens is None or count <= model.input_tokens:
        return None
    return (
        f"The input token count ({count}) exceeds the maximum number of tokens allowed "
        f"({model.input_tokens})."
    )


def max_output_tokens(model: Model, wanted: Any) -> str | None:
    limit = model.output_tokens
    if wanted is None or limit is None or (isinstance(wanted, int) and 1 <= wanted <= limit):
        return None
    return (
        f"Unable to submit request because it has a maxOutputTokens value of {wanted} but the "
        f"supported range is from 1 (inclusive) to {limit + 1} (exclusive). Update the value and try again."
    )


def thinking(model: Model, level: Any, budget: Any) -> str | None:
    """A thinkingConfig the model refuses: a level it does not take (any level on a budget model),
    a budget on a level model that takes none, a budget out of range, or both at once."""
    rules = model.thinking
    if rules is None:
        return None
    if level is not None and budget is not None:
        return "Setting both thinking_level and thinking_budget is not supported. Use only one of them."
    if level is not None:
        level = str(level).upper()
        if not rules.levels:
            return "Thinking level is not supported for this model."
        if level not in rules.levels:
            taken = ", ".join(rules.levels)
            return f"Thinking level {level} is not supported for this model. Supported levels: {taken}."
        return None
    if not isinstance(budget, int) or rules.budget is None:
        return None  # Gemini 3 still takes a budget (deprecated), and maps it to a level
    low, high = rules.budget
    if budget == -1 or (budget == 0 and rules.can_turn_off) or low <= budget <= high:
        return None
    return f"The thinking budget ({budget}) is invalid."


def function_parameters(schema: Any, where: str) -> Iterator[tuple[tuple, str]]:
    """The refusals of a function's `parameters` schema: (path inside it, message). `where` is
    the declaration as the service names it (`tools[0].function_declarations[2]`)."""
    if isinstance(schema, dict) and _is(schema, "OBJECT") and not schema.get("properties"):
        field = f"GenerateContentRequest.{where}.parameters.properties"
        yield ("properties",), f"* {field}: should be non-empty for OBJECT type\n"
    yield from schema_enums(schema, f"{where}.parameters")


def schema_enums(schema: Any, where: str, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """An `enum` is taken on STRING schemas only, and its values must be strings."""
    if not isinstance(schema, dict):
        return
    enum = schema.get("enum")
    if isinstance(enum, list):
        if schema.get("type") is not None and not _is(schema, "STRING"):
            field = f"GenerateContentRequest.{where}.enum"
            yield path + ("enum",), f"* {field}: only allowed for STRING type\n"
        for i, value in enumerate(enum):
            if not isinstance(value, str):
                at = f"{where}.enum[{i}]"
                yield path + ("enum", i), f"Invalid value at '{at}' (TYPE_STRING), {value}"
                break
    for name, sub in (
        (schema.get("properties") or {}).items() if isinstance(schema.get("properties"), dict) else ()
    ):
        yield from schema_enums(sub, f"{where}.properties[{name}]", path + ("properties", name))
    if "items" in schema:
        yield from schema_enums(schema["items"], f"{where}.items", path + ("items",))
    for i, sub in enumerate(schema.get("anyOf") or []):
        yield from schema_enums(sub, f"{where}.any_of[{i}]", path + ("anyOf", i))


def _is(schema: dict, kind: str) -> bool:
    return str(schema.get("type", "")).upper() == kind
