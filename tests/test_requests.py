"""Rendering records into requests: sandboxed, strict, deterministic."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import write

from batchflow.errors import SourceError
from batchflow.prepare.render import Renderer
from batchflow.prepare.sources import Record
from batchflow.spec.loader import load_pipelines


def _pipeline(tmp_path, source: str, rest: str, data: str = "{}"):
    """A pipeline of `source` (a YAML flow mapping) and the rest of its spec (YAML); `data` is
    the source's one line, whose fields `load_pipelines` checks the templates against."""
    write(tmp_path / "data.jsonl", data + "\n")
    spec = tmp_path / "p.yaml"
    head = "version: 1\nname: p\nmodel: gemini-3.8-flash\noutput: {uri: out.jsonl}\n"
    spec.write_text(f"{head}source: {source}\n{rest}\n")
    (pipeline,) = load_pipelines([spec])
    return pipeline


def _renderer(tmp_path, prompt: str) -> Renderer:
    return Renderer(
        _pipeline(tmp_path, "{uri: data.jsonl}", f"request: {{prompt: {json.dumps(prompt)}}}", '{"a": 1}')
    )


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


FAST_CASES = [
    ("Tag {{ title }}: {{ item.name }}!", {"title": 'Ünïcødé "q" \\ \n\t\x01 😀', "item": {"name": 3.5}}),
    ("{{ a }}", {"a": None}),
    ("{{ a }}", {"a": True}),
    ("{{ a }}", {"a": [1, {"b": 2}]}),
    ("{{ a.b }}", {"a": {"b": {"c": 1}}}),
    ("{{ a.items }}", {"a": {"items": "mine"}}),  # Jinja finds the dict method first
    ("{{ a.b }}", {"a": "not a mapping"}),
    ("{{- a -}}\n  x  \n", {"a": 1}),
    ("{{ range }}", {"range": "a field, not the global"}),
    ("{ {{ a }} }} {{ b }}{0}{}", {"a": "{b}", "b": 2.0}),  # braces around and in fields
    ("{{ a }} and {{ b }}", {"a": 1}),  # a field missing: Jinja says so
    ("{{ a }}", {"a": {"x": "{y}"}}),
]


@pytest.mark.parametrize(("template", "data"), FAST_CASES)
def test_field_templates_render_as_jinja_does(tmp_path, template, data):
    from batchflow.prepare.render import _compiled, _Template, compile_template

    fast = compile_template(template)
    jinja = _Template(_compiled(template))
    try:
        expected = jinja.render(data)
    except Exception as exc:  # noqa: BLE001 - whatever Jinja raises, the fast path raises too
        with pytest.raises(type(exc)):
            fast.render(data)
        return
    assert fast.render(data) == expected


def test_missing_fields_fail_as_jinja_says(tmp_path):
    from batchflow.prepare.render import compile_template

    template = compile_template("Say {{ word }} and {{ a.b }}")
    renderer = _renderer(tmp_path, "{{ a }}")
    renderer._prompt = template
    for data, message in (
        ({"a": {"b": 1}}, "'word' is undefined"),
        ({"word": 1, "a": {}}, "has no attribute 'b'"),
    ):
        with pytest.raises(SourceError, match=message):
            list(renderer.render(iter([Record("data.jsonl", 1, data)])))


def test_request_lines_are_the_canonical_json_of_the_request(tmp_path):
    """The body built from pieces is byte for byte canonical(request): hashes never change."""
    from batchflow.prepare.render import canonical

    write(tmp_path / "pic.png", "png")
    specs = {
        "generate": """
            request:
              system: "You are {{ role }}."
              prompt: "Describe {{ item.name }} — «{{ note }}»"
              files: ["{{ image }}", "files/abc123"]
              generation_config:
                temperature: 0.2
                response_mime_type: application/json
                response_schema: {type: object, properties: {z: {type: string}, a: {type: number}}}
              safety_settings: [{category: HARM_CATEGORY_HARASSMENT, threshold: BLOCK_NONE}]
              labels: {team: x}
            tools: [google_search]
        """,
        "constant-system": """
            request: {system: "You tag \\"things\\" — «always».", prompt: "{{ note }}"}
        """,
        "embed": """
            model: gemini-embedding-001
            embed: {content: "{{ note }}", title: "{{ role }}", task_type: RETRIEVAL_DOCUMENT}
        """,
    }
    data = {"role": 'a "tagger"\n', "item": {"name": "x\u2028y"}, "note": "\x00\x1f😀 \\", "image": "pic.png"}
    for name, body in specs.items():
        model = "gemini-embedding-001" if "embed" in name else "gemini-3.8-flash"
        body = body.replace("            model: gemini-embedding-001\n", "")
        spec = write(
            tmp_path / f"{name}.yaml",
            f"""
            version: 1
            name: {name}
            model: {model}
            source: {{uri: data.jsonl}}
            output: {{uri: out.jsonl}}
            """
            + body,
        )
        write(tmp_path / "data.jsonl", json.dumps(data) + "\n")
        (pipeline,) = load_pipelines([spec])
        renderer = Renderer(pipeline)
        record = Record("data.jsonl", 1, data)
        assert renderer.body(record, "k") == canonical(renderer.request(record, "k")), name


PLAIN_SPECS = {
    "constant system": 'request: {system: "You tag \\"things\\" «always».", prompt: "{{ title }}: {{ n }}"}',
    "fields in system": 'request: {system: "You are {{ role }}.", prompt: "{{ title }}"}',
    "constant prompt": 'request: {system: "{{ role }}", prompt: "The same {0} for all"}',
    "no template but the key": 'request: {prompt: "{ plain }"}',
    "every fixed part": """
        request:
          prompt: "{ {{ title }} }} {0}"
          generation_config: {temperature: 0.2, response_mime_type: application/json}
          safety_settings: [{category: HARM_CATEGORY_HARASSMENT, threshold: BLOCK_NONE}]
          labels: {team: fileData}
        tools: [google_search]""",
    "a cache": 'request: {prompt: "{{ title }}"}\ncache: {system: "Be brief {{ role }}."}',
}
PLAIN_DATA = [
    {"sku": "S1", "title": 'Ünïcødé "q" \\ \n\t\x01 😀 \u2028', "n": 1, "role": "{y}"},
    {"sku": 7, "title": None, "n": 3.5, "role": ""},
    {"sku": "  spaced  ", "title": True, "n": [1, {"b": 2}], "role": "r", "extra": "ignored"},
    {"sku": {"k": "{}"}, "title": "fileData", "n": -0.0, "role": "\x00"},
]


@pytest.mark.parametrize("key", ["{{ sku }}", "id-{{ sku }}-{{ n }}"])
@pytest.mark.parametrize("name", list(PLAIN_SPECS))
def test_plain_rendering_makes_what_render_makes(tmp_path, name, key):
    """render_plain, the loop for templates of fields, gives render's keys, hashes and lines
    byte for byte, whatever the fixed parts of the request and the values' types."""
    source = f'{{uri: data.jsonl, key: "{key}"}}'
    pipeline = _pipeline(tmp_path, source, textwrap.dedent(PLAIN_SPECS[name]).strip())
    rendered = list(Renderer(pipeline).render(Record("d", i, data) for i, data in enumerate(PLAIN_DATA)))
    plain = Renderer(pipeline).render_plain(PLAIN_DATA)
    assert plain is not None
    assert plain == ([r.key for r in rendered], [r.hash for r in rendered], [r.line for r in rendered])


@pytest.mark.parametrize(
    ("change", "datas"),
    [
        ({}, [{"sku": "a", "title": "t"}, {"title": "no key"}]),  # a field missing
        ({}, [{"sku": "a", "title": "t"}, {"sku": " ", "title": "t"}]),  # an empty key
        ({"prompt": "{{ item.title }}"}, [{"sku": "a", "item": {"title": "t"}}]),  # a dotted field
        ({"prompt": "{% if sku %}x{% endif %}"}, [{"sku": "a"}]),  # more than fields
        ({"files": ["{{ title }}"]}, [{"sku": "a", "title": ""}]),  # files
        ({"key": None}, [{"sku": "a", "title": "t"}]),  # the key is the content's digest
    ],
)
def test_plain_rendering_leaves_the_rest_to_render(tmp_path, change, datas):
    request = {"prompt": "{{ title }}", **{k: v for k, v in change.items() if k != "key"}}
    source = {"uri": "data.jsonl", **({"key": "{{ sku }}"} if "key" not in change else {})}
    pipeline = _pipeline(tmp_path, json.dumps(source), f"request: {json.dumps(request)}")
    assert Renderer(pipeline).render_plain(datas) is None


@pytest.mark.parametrize(
    "line",
    [
        '{"n": 18446744073709551616, "s": "x"}',  # beyond 64 bits: orjson would read a float
        '{"deep": [1, {"n": -9223372036854775809}]}',
        '{"n": NaN, "m": Infinity}',  # json reads them, orjson does not
        '{"s": "\\ud800"}',  # a lone surrogate
        '{"f": 1e19, "g": 0.30000000000000004, "i": 9223372036854775807}',
        '{"a": 1, "b": 2, "a": 3}',  # the last wins, in the first's place
    ],
)
def test_records_are_read_exactly_as_json_reads_them(line):
    from batchflow.prepare.sources import jsonl_batch, jsonl_record

    data = jsonl_record(line, "data.jsonl", 1).data
    assert repr(data) == repr(json.loads(line)) and list(data) == list(json.loads(line))
    batch = jsonl_batch(['{"a": 1}\n', line + "\n"])  # a batch: read whole, or left to jsonl_record
    assert batch is None or repr(batch[1]) == repr(json.loads(line))


@pytest.mark.parametrize(
    "line", ['{"x": 1}garbage', "[1, 2]", '"text"', '{"id": "1234567890123456789"}', '{"n": NaN}']
)
def test_a_batch_with_a_line_json_reads_otherwise_is_read_line_by_line(line):
    from batchflow.prepare.sources import jsonl_batch

    assert jsonl_batch(['{"a": 1}\n', line + "\n"]) is None
    assert jsonl_batch(['{"a": 1}\n', '{"id": "123456789012345678"}\n']) is not None


def test_a_bad_line_keeps_jsons_message():
    from batchflow.prepare.sources import jsonl_record

    with pytest.raises(SourceError, match=r"invalid JSON at column 9: Extra data"):
        jsonl_record('{"x": 1}garbage', "data.jsonl", 7)


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_a_record_cut_short_is_placed_after_its_last_character(ending):
    from batchflow.prepare.sources import jsonl_record

    with pytest.raises(SourceError, match=r"invalid JSON at column 16: Expecting ',' delimiter"):
        jsonl_record('{"sku": "S3000"' + ending, "data.jsonl", 3001)
