"""Request files are uploaded once and named in requests; a context cache is made, used and deleted."""

from __future__ import annotations

import json

from conftest import write

GUIDE = "House style: short sentences, plain words, no hype. " * 400  # over 4,096 tokens


def _images(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / f"pipelines/images/{name}.png").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"pipelines/images/{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode() * 20)


def _rows(tmp_path):
    return [json.loads(x) for x in (tmp_path / "pipelines/out.jsonl").read_text().splitlines()]


def test_files_named_by_records_are_uploaded_once_each(cli, client, emulator_env, tmp_path):
    _images(tmp_path)
    records = [
        {"id": 1, "img": "images/cat.png"},
        {"id": 2, "img": "images/dog.png"},
        {"id": 3, "img": "images/cat.png"},
        {"id": 4, "img": ""},
    ]
    write(tmp_path / "pipelines/data.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write(
        tmp_path / "pipelines/p.yaml",
        """
        version: 1
        name: pics
        model: gemini-3.8-flash
        source: {uri: data.jsonl, key: "{{ id }}"}
        request:
          prompt: Describe the picture.
          files: ["{{ img }}"]
        output: {uri: out.jsonl}
    """,
    )
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert result.out.count("uploaded images/") == 0 and result.out.count("/images/") == 2
    images = [f for f in client.files.list() if f.mime_type == "image/png"]
    assert len(images) == 2
    rows = _rows(tmp_path)
    assert all("error" not in r for r in rows)
    # an image counts 258 prompt tokens in the emulator, as on the service
    assert [r["usage"]["prompt_tokens"] > 258 for r in rows] == [True, True, True, False]
    shard = next((tmp_path / "state/pics/shards").glob("*.jsonl")).read_text()
    assert "batchflow://file/" in shard  # the stored shard keeps placeholders: its id is about content

    again = cli("apply")
    assert "up to date" in again.out and "uploaded" not in again.out


def test_changing_a_file_sends_its_requests_again(cli, client, emulator_env, tmp_path):
    _images(tmp_path)
    write(
        tmp_path / "pipelines/data.jsonl",
        '{"id": 1, "img": "images/cat.png"}\n{"id": 2, "img": "images/dog.png"}\n',
    )
    write(
        tmp_path / "pipelines/p.yaml",
        """
        version: 1
        name: pics
        model: gemini-3.8-flash
        source: {uri: data.jsonl, key: "{{ id }}"}
        request: {prompt: Describe., files: ["{{ img }}"]}
        output: {uri: out.jsonl}
    """,
    )
    assert cli("apply", "--wait").code == 0
    (tmp_path / "pipelines/images/dog.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"another dog")
    result = cli("apply", "--wait")
    assert result.code == 0
    assert "new shard of 1 request" in result.out


def test_cache_is_created_used_and_deleted(cli, client, emulator_env, tmp_path):
    write(
        tmp_path / "pipelines/data.jsonl",
        "".join(json.dumps({"q": f"question {i}"}) + "\n" for i in range(3)),
    )
    write(tmp_path / "pipelines/guide.txt", GUIDE)
    write(
        tmp_path / "pipelines/p.yaml",
        f"""
        version: 1
        name: cached
        model: gemini-3.8-flash
        source: {{uri: data.jsonl}}
        request: {{prompt: "{{{{ q }}}}"}}
        cache:
          system: Answer using the style guide.
          contents: ["{GUIDE[:200]}"]
          files: [guide.txt]
          ttl: 2h
        tools: [google_search]
        output: {{uri: out.jsonl}}
    """,
    )
    result = cli("apply", "--wait")
    assert result.code == 0, result.err
    assert "created cache cachedContents/" in result.out and "deleted cache" in result.out
    rows = _rows(tmp_path)
    assert all(r["usage"]["cached_tokens"] > 0 for r in rows), rows
    assert list(client.caches.list()) == []  # cleaned up once every request had its answer
    shard = next((tmp_path / "state/cached/shards").glob("*.jsonl")).read_text()
    request = json.loads(shard.splitlines()[0])["request"]
    assert request["cachedContent"].startswith("batchflow://cache/") and "tools" not in request
