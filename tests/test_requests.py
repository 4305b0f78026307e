"""Rendering records into requests: sandboxed, strict, deterministic."""

from __future__ import annotations

import json

import pytest
from conftest import write

from batchflow.errors import SourceError
from batchflow.loader import load_pipelines
from batchflow.requests import Renderer
from batchflow.sources import Record


def _renderer(tmp_path, prompt: str) -> Renderer:
    write(tmp_path / "data.jsonl", '{"a": 1}\n')
    spec = write(
        tmp_path / "p.yaml",
        f"""
        version: 1
        name: p
        model: gemini-2.5-flash
        source: {{uri: data.jsonl}}
        request: {{prompt: {json.dumps(prompt)}}}
        output: {{uri: out.jsonl}}
    """,
    )
    (pipeline,) = load_pipelines([spec])
    return Renderer(pipeline)


def test_the_sandbox_refuses_unsafe_attributes(tmp_path):
    renderer = _renderer(tmp_path, "{{ a.__class__.__mro__ }}")
    with pytest.raises(SourceError) as info:
        list(renderer.render(iter([Record("data.jsonl", 1, {"a": "x"})])))
    assert "unsafe" in str(info.value) and "data.jsonl:1" in str(info.value)


def test_jinja_globals_still_work(tmp_path):
    renderer = _renderer(tmp_path, "{% for i in range(a) %}x{% endfor %}")
    (rendered,) = renderer.render(iter([Record("d", 1, {"a": 3})]))
    assert json.loads(rendered.line)["request"]["contents"][0]["parts"][0]["text"] == "xxx"


def test_same_record_same_hash_and_a_change_changes_it(tmp_path):
    renderer = _renderer(tmp_path, "Hi {{ a }}")
    (one,) = renderer.render(iter([Record("d", 1, {"a": 1})]))
    (again,) = renderer.render(iter([Record("d", 1, {"a": 1})]))
    (other,) = renderer.render(iter([Record("d", 1, {"a": 2})]))
    assert one.hash == again.hash != other.hash
    assert json.loads(one.line)["key"] == one.hash
