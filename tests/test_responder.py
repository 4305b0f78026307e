"""The responder's answers: structured output validates against its schema, over many schemas."""

from __future__ import annotations

import json

import jsonschema
import pytest

from batchflow.emulator import responder

SCHEMAS = [
    {"type": "STRING"},
    {"type": "INTEGER", "minimum": 10, "maximum": 12},
    {"type": "NUMBER", "minimum": -1.5, "maximum": 0},
    {"type": "BOOLEAN"},
    {"type": "STRING", "enum": ["red", "green", "blue"]},
    {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 4, "maxItems": 6},
    {
        "type": "OBJECT",
        "properties": {"a": {"type": "STRING"}, "b": {"type": "INTEGER"}},
        "required": ["a", "b"],
    },
    {
        "type": "OBJECT",
        "properties": {
            "person": {
                "type": "OBJECT",
                "properties": {
                    "name": {"type": "STRING", "minLength": 12, "maxLength": 20},
                    "born": {"type": "STRING", "format": "date"},
                    "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["x", "y"]}},
                },
                "required": ["name", "born"],
            },
            "score": {"type": "NUMBER", "minimum": 0, "maximum": 1},
        },
        "required": ["person", "score"],
        "propertyOrdering": ["score", "person"],
    },
    # JSON Schema (response_json_schema) features
    {
        "type": "object",
        "properties": {"id": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}},
        "required": ["id"],
        "additionalProperties": False,
    },
    {"type": ["string", "null"]},
    {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 5, "maximum": 5}]},
    {
        "$defs": {"item": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}},
        "type": "array",
        "items": {"$ref": "#/$defs/item"},
        "minItems": 1,
    },
    {
        "type": "object",
        "properties": {"when": {"type": "string", "format": "date-time"}, "k": {"const": "fixed"}},
        "required": ["when", "k"],
    },
]


def _as_json_schema(schema):
    """OpenAPI-style responseSchema (upper-case types) to the JSON Schema jsonschema validates."""
    if isinstance(schema, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _as_json_schema(v))
            for k, v in schema.items()
            if k != "propertyOrdering"
        }
    if isinstance(schema, list):
        return [_as_json_schema(s) for s in schema]
    return schema


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: json.dumps(s)[:40])
@pytest.mark.parametrize("prompt", ["a", "another prompt", "yet another, longer, prompt with words"])
def test_structured_output_validates(schema, prompt):
    request = {
        "contents": [{"parts": [{"text": prompt}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    answer = responder.generate("models/gemini-3.8-flash", request)
    value = json.loads(answer["candidates"][0]["content"]["parts"][0]["text"])
    jsonschema.validate(value, _as_json_schema(schema), format_checker=jsonschema.FormatChecker())


def test_property_ordering_is_followed():
    schema = SCHEMAS[7]
    value = responder.fake_value(schema, "seed")
    assert list(value) == ["score", "person"]


def test_same_request_same_answer_and_consistent_usage():
    request = {
        "contents": [{"parts": [{"text": "hello " * 50}]}],
        "systemInstruction": {"parts": [{"text": "s"}]},
    }
    a, b = responder.generate("m", request), responder.generate("m", request)
    assert a == b
    usage = a["usageMetadata"]
    assert usage["promptTokenCount"] == responder.prompt_tokens(request) > 50
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]


def test_max_output_tokens_truncates():
    request = {"contents": [{"parts": [{"text": "word " * 100}]}], "generationConfig": {"maxOutputTokens": 3}}
    answer = responder.generate("m", request)
    assert answer["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert answer["usageMetadata"]["candidatesTokenCount"] <= 3


def test_embeddings_have_the_asked_size():
    assert len(responder.embed({"content": {"parts": [{"text": "x"}]}})["embedding"]["values"]) == 3072
    assert (
        len(
            responder.embed({"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 5})["embedding"][
                "values"
            ]
        )
        == 5
    )
