"""Stages: a pipeline whose records are another pipeline's answered rows."""

from __future__ import annotations

import json
import re

from conftest import write

CLASSIFY = """
    version: 1
    name: classify
    model: gemini-3.8-flash
    source: {uri: tickets.jsonl, key: "{{ id }}"}
    request:
      prompt: "Classify: {{ body }}"
      generation_config:
        response_mime_type: application/json
        response_schema:
          type: OBJECT
          properties: {label: {type: STRING, enum: [complaint, question, praise]}}
          required: [label]
    output: {uri: OUT, columns: [body]}
"""
REPLIES = """
    version: 1
    name: replies
    model: gemini-3.8-flash
    source: {pipeline: classify, where: "json.label == 'complaint'"}
    request: {prompt: "Reply to: {{ body }} ({{ json.label }})"}
    output: {uri: replies.jsonl, columns: [body]}
"""
BODIES = ["broken on arrival", "how do I log in", "thanks a lot", "charged twice", "late again", "love it"]


def _tickets(tmp_path, bodies=BODIES):
    rows = "".join(json.dumps({"id": f"T{i}", "body": b}) + "\n" for i, b in enumerate(bodies))
    write(tmp_path / "pipelines/tickets.jsonl", rows)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _stages(tmp_path, out="classes.jsonl"):
    write(tmp_path / "pipelines/classify.yaml", CLASSIFY.replace("OUT", out))
    write(tmp_path / "pipelines/replies.yaml", REPLIES)
    _tickets(tmp_path)


def test_a_stage_answers_the_rows_of_its_upstream_that_pass_where(cli, client, emulator_env, tmp_path):
    _stages(tmp_path, out="classes.csv")  # the upstream's output format does not matter
    planned = cli("plan")
    assert planned.code == 0 and "= hold: waits for classify (1 action there)" in planned.out
    assert "up to 6 of its records may change" in planned.out
    done = cli("apply", "--wait")
    assert done.code == 0, done.err
    assert done.out.index("classify: done") < done.out.index("replies: done")  # upstream first
    replies = _rows(tmp_path / "pipelines/replies.jsonl")
    assert replies and all("(complaint)" in r["text"] for r in replies)  # json typed, from a CSV upstream
    assert {r["key"] for r in replies} < {f"T{i}" for i in range(len(BODIES))}
    assert len(list(client.batches.list())) == 2
    again = cli("apply", "--wait")
    assert again.code == 0 and "submit" not in again.out and len(list(client.batches.list())) == 2
    assert "No changes" in cli("plan").out


def test_only_what_changed_upstream_is_sent_again_downstream(cli, client, emulator_env, tmp_path):
    _stages(tmp_path)
    assert cli("apply", "--wait").code == 0
    before = {r["key"]: r for r in _rows(tmp_path / "pipelines/classes.jsonl")}
    bodies = list(BODIES)
    bodies[3] = "charged twice, and again today"
    _tickets(tmp_path, bodies)
    done = cli("apply", "--wait")
    assert done.code == 0, done.err
    after = {r["key"]: r for r in _rows(tmp_path / "pipelines/classes.jsonl")}
    changed = [k for k in after if after[k] != before[k] and after[k]["json"]["label"] == "complaint"]
    new_shards = re.findall(r"^(\w+): \+ submit [0-9a-f]{8}: new shard of (\d+)", done.out, re.M)
    assert ("classify", "1") in new_shards  # the changed ticket only
    assert [n for p, n in new_shards if p == "replies"] == (["1"] if changed else [])
    replies = _rows(tmp_path / "pipelines/replies.jsonl")
    assert sorted(r["key"] for r in replies) == sorted(
        k for k, r in after.items() if r["json"]["label"] == "complaint"
    )


def test_group_by_makes_one_record_per_group_from_its_rows(cli, emulator_env, tmp_path):
    write(
        tmp_path / "pipelines/books.yaml",
        """
        version: 1
        name: chapters
        model: gemini-3.8-flash
        source: {uri: chapters.jsonl, key: "{{ book }}-{{ n }}"}
        request: {prompt: "Summarize {{ text }}"}
        output: {uri: chapters-out.jsonl, columns: [book, n]}
        ---
        version: 1
        name: books
        model: gemini-3.8-flash
        source: {pipeline: chapters, group_by: "{{ book }}"}
        request:
          prompt: "{{ group }}: {% for row in rows %}[{{ row.n }}] {% endfor %}"
        output: {uri: books-out.jsonl}
        """,
    )
    chapters = [("b", 1), ("a", 1), ("b", 2), ("a", 2), ("b", 3)]
    write(
        tmp_path / "pipelines/chapters.jsonl",
        "".join(json.dumps({"book": b, "n": n, "text": f"{b}{n}"}) + "\n" for b, n in chapters),
    )
    assert cli("apply", "--wait").code == 0
    books = _rows(tmp_path / "pipelines/books-out.jsonl")
    assert [r["key"] for r in books] == ["b", "a"]  # groups in the order their first row came
    assert "b: [1] [2] [3]" in books[0]["text"] and "a: [1] [2]" in books[1]["text"]


def test_validate_refuses_an_unknown_upstream_a_cycle_and_where_without_a_pipeline(cli, tmp_path):
    _stages(tmp_path)
    write(tmp_path / "pipelines/replies.yaml", REPLIES.replace("pipeline: classify", "pipeline: clasify"))
    below = REPLIES.replace("name: replies", "name: acks").replace("pipeline: classify", "pipeline: replies")
    write(tmp_path / "pipelines/acks.yaml", below.replace("replies.jsonl", "acks.jsonl"))
    bad = cli("validate")
    assert bad.code == 1
    assert "acks.yaml:4: source.pipeline: its upstream 'replies' cannot run (see its error)" in bad.err
    unknown = "no pipeline named 'clasify' was loaded (did you mean 'classify'?)"
    assert f"pipelines/replies.yaml:4: source.pipeline: {unknown}" in bad.err
    write(
        tmp_path / "pipelines/classify.yaml",
        CLASSIFY.replace("uri: tickets.jsonl, ", "pipeline: replies, ").replace("OUT", "c.jsonl"),
    )
    write(tmp_path / "pipelines/replies.yaml", REPLIES)
    (tmp_path / "pipelines/acks.yaml").unlink()
    cycle = cli("validate")
    assert cycle.code == 1 and "a cycle of stages: classify -> replies -> classify" in cycle.err
    write(
        tmp_path / "pipelines/classify.yaml",
        CLASSIFY.replace("key:", "where: 'true', key:").replace("OUT", "c.jsonl"),
    )
    where = cli("validate")
    assert where.code == 1 and "where and group_by read another pipeline's results" in where.err
    assert "Traceback" not in bad.err + cycle.err + where.err


def test_a_target_brings_its_upstream_and_a_store_apart_is_refused(cli, client, emulator_env, tmp_path):
    _stages(tmp_path)
    done = cli("apply", "--wait", "--target", "replies")
    assert done.code == 0 and "classify: done" in done.out and "replies: done" in done.out
    write(tmp_path / "pipelines/replies.yaml", REPLIES + "    state: elsewhere\n")
    apart = cli("validate")
    assert apart.code == 1 and "a stage reads its upstream's state, so both need one store" in apart.err


def test_a_map_stage_starts_on_its_upstreams_first_answers(cli, client, emulator, emulator_env, tmp_path):
    capped = (
        CLASSIFY.replace("OUT", "classes.jsonl") + "    batch: {max_requests: 2, max_concurrent_jobs: 1}\n"
    )
    write(tmp_path / "pipelines/classify.yaml", capped)
    write(tmp_path / "pipelines/replies.yaml", REPLIES.replace(", where: \"json.label == 'complaint'\"", ""))
    _tickets(tmp_path)
    emulator.store.clock.set_speed(0)  # jobs move only when the test moves the clock
    first = cli("apply")
    assert first.code == 0 and "replies: waits for classify, whose jobs are at work" in first.out
    emulator.store.clock.advance(3600)  # the first upstream job is done; the next one starts
    second = cli("apply")
    assert second.code == 0, second.err
    assert "replies: + submit" in second.out and "new shard of 2 requests" in second.out
    assert "replies: waiting for 1 job(s)" in second.out  # while classify still works
    planned = cli("plan")
    assert "replies:\n  ~ poll shard" in planned.out and "waits for classify" not in planned.out
    emulator.store.clock.set_speed(3600)
    assert cli("apply", "--wait").code == 0
    classes = _rows(tmp_path / "pipelines/classes.jsonl")
    replies = _rows(tmp_path / "pipelines/replies.jsonl")
    assert [r["key"] for r in replies] == [r["key"] for r in classes]  # every row, in order
    assert "No changes" in cli("plan").out


def test_a_reduce_starts_on_the_groups_whose_rows_are_all_answered(cli, emulator, emulator_env, tmp_path):
    write(
        tmp_path / "pipelines/books.yaml",
        """
        version: 1
        name: chapters
        model: gemini-3.8-flash
        source: {uri: chapters.jsonl, key: "{{ book }}-{{ n }}"}
        request: {prompt: "Summarize {{ book }} {{ n }}"}
        batch: {max_requests: 2, max_concurrent_jobs: 1}
        output: {uri: chapters-out.jsonl, columns: [book, n]}
        ---
        version: 1
        name: books
        model: gemini-3.8-flash
        source: {pipeline: chapters, group_by: "{{ book }}"}
        request: {prompt: "{{ group }}: {{ rows | length }} chapters"}
        output: {uri: books-out.jsonl}
        """,
    )
    chapters = [("a", 1), ("a", 2), ("b", 1), ("b", 2)]  # a's rows in the first job, b's in the next
    write(
        tmp_path / "pipelines/chapters.jsonl",
        "".join(json.dumps({"book": b, "n": n}) + "\n" for b, n in chapters),
    )
    emulator.store.clock.set_speed(0)
    assert "books: waits for chapters" in cli("apply").out
    emulator.store.clock.advance(3600)
    early = cli("apply")
    assert early.code == 0 and "books: + submit" in early.out and "new shard of 1 request" in early.out
    emulator.store.clock.set_speed(3600)
    assert cli("apply", "--wait").code == 0
    books = _rows(tmp_path / "pipelines/books-out.jsonl")
    assert [r["key"] for r in books] == ["a", "b"] and "b: 2 chapters" in books[1]["text"]


def test_a_saved_plan_and_a_budget_hold_across_stages(cli, client, emulator_env, tmp_path):
    _stages(tmp_path)
    assert cli("plan", "--out", "tfplan").code == 0
    applied = cli("apply", "tfplan")  # planned waiting for its upstream: it goes once that is done
    assert applied.code == 0, applied.err
    assert "classify: done" in applied.out and "replies: done" in applied.out
    _tickets(tmp_path, [f"{body}, again" for body in BODIES])  # every answer upstream changes
    refused = cli("apply", "--wait", "--max-usd", "0.000001")
    assert refused.code == 1 and "classify: error:" in refused.err and "over the budget" in refused.err
    assert "replies: waits for classify, which stopped" in refused.out
    assert len(list(client.batches.list())) == 2  # nothing sent above the budget, downstream either
