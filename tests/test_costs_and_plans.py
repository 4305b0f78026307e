"""What a reviewer sees before paying: estimates, what a change pays for again, budgets,
machine-readable and markdown plans, saved plans, and the GitHub step summary."""

from __future__ import annotations

import json
from datetime import date

import pytest
from conftest import write

from batchflow.errors import BatchflowError
from batchflow.spec.pricing import PriceTable, Tokens, estimate_line, load_prices

SPEC = """
    version: 1
    name: tags
    model: gemini-3.8-flash
    source: {uri: data.jsonl, key: "{{ id }}"}
    request: {prompt: "PROMPT {{ word }}"}
    output: {uri: out/tags.jsonl}
"""


def _pipeline(tmp_path, prompt: str = "Say", rows: int = 3, extra: str = "") -> None:
    write(tmp_path / "pipelines/tags.yaml", SPEC.replace("PROMPT", prompt) + extra)
    lines = "".join(json.dumps({"id": i, "word": f"word{i}"}) + "\n" for i in range(rows))
    write(tmp_path / "pipelines/data.jsonl", lines)


def test_plan_estimates_and_names_what_a_change_pays_for_again(cli, emulator_env, tmp_path):
    _pipeline(tmp_path)
    first = cli("plan")
    assert "= estimate: 3 requests, ~" in first.out and "at Batch Mode prices" in first.out
    assert "output assumed 500 a request" in first.out
    assert "answered requests changed" not in first.out
    assert "Estimated cost: ~$" in first.out
    assert cli("apply", "--wait").code == 0
    _pipeline(tmp_path, prompt="Tell me about")
    second = cli("plan")
    assert "~ 3 answered requests changed: they will be sent and paid again" in second.out
    assert "output as observed so far" in second.out  # the first answers say how long answers are
    # A new record alone is new, not paid again.
    _pipeline(tmp_path, prompt="Say", rows=4)
    third = cli("plan")
    assert "submit 1 new request (" in third.out and "paid again" not in third.out
    status = cli("status")
    assert "cost ~$" in status.out


def test_a_fresh_ci_runner_sees_what_a_change_pays_for_again(
    cli, emulator_env, s3_bucket, tmp_path, monkeypatch
):
    _pipeline(tmp_path)
    env = {"BATCHFLOW_STATE": f"s3://{s3_bucket}/state"}
    assert cli("apply", "--wait", env=env).code == 0
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "another-runner"))  # an empty mirror
    _pipeline(tmp_path, prompt="Tell me about")
    assert "~ 3 answered requests changed" in cli("plan", env=env).out


def test_a_budget_refuses_before_anything_is_uploaded(cli, client, emulator_env, tmp_path):
    _pipeline(tmp_path, extra="    budget: {max_usd: 0.000001}\n")
    plan = cli("plan")
    assert "is over the budget of $0.0000010: apply refuses" in plan.out  # never "$0.0000"
    doc = json.loads(cli("plan", "--json").out)["pipelines"][0]
    assert doc["over_budget"] is True and doc["budget_message"].endswith("over the budget of $0.0000010")
    refused = cli("apply", "--wait")
    assert refused.code == 1
    assert "estimated cost $0.0028 for 3 requests is over the budget of $0.0000010" in refused.err
    assert len(refused.err.strip().splitlines()) == 1
    assert not list(client.files.list()) and not list(client.batches.list())
    assert cli("apply", "--wait", "--max-usd", "5").code == 0  # the flag overrides the spec
    assert len((tmp_path / "pipelines/out/tags.jsonl").read_text().splitlines()) == 3


def test_plan_as_json_and_markdown_and_the_step_summary(cli, emulator_env, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    _pipeline(tmp_path)
    doc = json.loads(cli("plan", "--json").out)
    assert doc["format"] == "batchflow-plan" and doc["version"] == 1
    (p,) = doc["pipelines"]
    assert p["pipeline"] == "tags" and [a["kind"] for a in p["actions"]] == ["submit"]
    assert p["estimate"]["requests"] == 3 and p["estimate"]["usd"] > 0
    assert p["estimate"]["input_basis"] == "local estimate"
    markdown = cli("plan", "--format", "markdown").out
    assert markdown.startswith("### batchflow plan") and "| `tags` | 1 | 3 |" in markdown
    assert p["over_budget"] is False and p["budget_message"] is None
    assert cli("apply", "--wait").code == 0
    assert cli("status").code == 0
    text = summary.read_text()
    assert text.count("### batchflow plan") == 2
    assert "| `tags` | done |" in text and "### batchflow status" in text
    # Up to date, beside a pipeline whose source cannot be read: no "No changes" above its error.
    broken = SPEC.replace("name: tags", "name: broken").replace("data.jsonl", "broken.jsonl")
    write(tmp_path / "pipelines/broken.yaml", broken.replace("PROMPT", "Say"))
    write(tmp_path / "pipelines/broken.jsonl", '{"id": 1, "word": "a"}\n{"id": 2,\n')
    both = cli("plan", "--format", "markdown")
    assert both.code == 1 and "No changes" not in both.out
    assert "Could not plan 1 pipeline (see the errors)." in both.out
    assert (
        "| — | — | — | — | — | **error:** pipelines/broken.yaml:4:15: source.uri: cannot read source"
        in both.out
    )


def test_count_tokens_asks_the_api(cli, emulator_env, tmp_path):
    _pipeline(tmp_path)
    result = cli("plan", "--count-tokens")
    assert result.code == 0, result.err
    assert "countTokens on 3 requests" in result.out


def test_apply_a_saved_plan_and_refuse_a_stale_one(cli, client, emulator_env, tmp_path):
    _pipeline(tmp_path)
    planned = cli("plan", "--out", "tfplan")
    assert "Saved the plan to tfplan" in planned.out
    write(
        tmp_path / "pipelines/data.jsonl",
        (tmp_path / "pipelines/data.jsonl").read_text() + '{"id": 9, "word": "x"}\n',
    )
    stale = cli("apply", "tfplan")
    assert stale.code == 1
    assert "tags: its source changed since the plan was made" in stale.err
    assert not list(client.batches.list())
    assert cli("plan", "--out", "tfplan").code == 0
    applied = cli("apply", "tfplan")
    assert applied.code == 0, applied.err
    assert "created batches/" in applied.out
    # The state moved on since: the same plan is not applied twice.
    again = cli("apply", "tfplan")
    assert again.code == 1 and "its state changed since the plan was made" in again.err
    assert cli("apply", "--target", "tags", "tfplan").code == 1
    (tmp_path / "garbage").write_text("{}")
    assert "garbage: cannot read the plan: not a plan written by" in cli("apply", "garbage").err


def test_a_saved_plan_is_applied_with_the_options_it_was_made_with(
    cli, client, emulator, emulator_env, tmp_path
):
    emulator.store.clock.set_speed(1)  # jobs stay running: the job slot stays taken
    _pipeline(tmp_path, rows=4, extra="    batch: {max_requests: 1}\n")
    planned = cli("plan", "--max-usd", "0.000001", "--out", "tfplan")
    assert "over the budget" in planned.out
    refused = cli("apply", "tfplan")
    assert refused.code == 1 and "over the budget" in refused.err
    assert not list(client.batches.list()) and not list(client.files.list())
    mixed = cli("apply", "--max-usd", "5", "tfplan")
    assert mixed.code == 1
    assert "--max-usd: a saved plan is applied with the options it was made with" in mixed.err
    # Concurrency: one job at a time, as planned, though the spec sets no limit.
    assert cli("plan", "--max-concurrent-jobs", "1", "--out", "tfplan").code == 0
    applied = cli("apply", "tfplan")
    assert applied.code == 0, applied.err
    assert len(list(client.batches.list())) == 1
    saved = json.loads((tmp_path / "tfplan").read_text())["options"]
    assert saved["max_concurrent_jobs"] == 1 and saved["max_usd"] is None


def test_price_table():
    table = load_prices(on=date(2026, 12, 3))
    assert (
        table.batch_discount == 0.5 and table.of("gemini-3.8-flash-001") is table.models["gemini-3.8-flash"]
    )
    assert table.of("models/gemini-2.5-flash-lite") is table.models["gemini-2.5-flash-lite"]
    assert table.of("gemini-9") is None and table.cost("gemini-9", Tokens(1)) is None
    # A million input and output tokens of 3.8 Flash, at half the synchronous (promotional) price.
    assert table.cost("gemini-3.8-flash", Tokens(10**6, 10**6)) == pytest.approx((0.75 + 3.75) / 2)
    # A routed model is billed at its target's prices.
    assert table.of("gemini-2.5-flash") == table.models["gemini-3.5-flash-lite"]
    assert Tokens.from_usage({"prompt": 100, "cached": 40, "output": 5}) == Tokens(60, 5, 40)
    assert estimate_line('{"key": "' + "a" * 64 + '", "request": {"x": "' + "b" * 400 + '"}}') > 100
    assert isinstance(table, PriceTable)


def test_a_price_changes_on_the_day_its_promotion_ends():
    """3.8 Flash's promotion holds to 2026-12-31; Gemini 4 Argon's introductory price to 2026-11-30."""
    last, first = load_prices(on=date(2026, 12, 31)), load_prices(on=date(2027, 1, 1))
    assert (last.models["gemini-3.8-flash"].input, first.models["gemini-3.8-flash"].input) == (0.75, 1.50)
    argon = [load_prices(on=date(2026, 11, d)).models["gemini-4-argon"].output for d in (30,)]
    argon.append(load_prices(on=date(2026, 12, 1)).models["gemini-4-argon"].output)
    assert argon == [10.0, 20.0]


def test_prices_can_be_overridden(cli, emulator_env, tmp_path):
    write(
        tmp_path / "prices.yaml", "models:\n  gemini-3.8-flash: {input: 1000, output: 0, cached_input: 0}\n"
    )
    table = load_prices(tmp_path / "prices.yaml")
    assert table.models["gemini-3.8-flash"].input == 1000 and "gemini-2.5-pro" in table.models
    write(tmp_path / "bad.yaml", "models:\n  gemini-3.8-flash: {input: -1, output: 0, cached_input: 0}\n")
    with pytest.raises(BatchflowError, match=r"bad.yaml: price table: models.gemini-3.8-flash.input"):
        load_prices(tmp_path / "bad.yaml")
    _pipeline(tmp_path, extra="    budget: {max_usd: 0.01}\n")
    assert "over the budget" in cli("plan", env={"BATCHFLOW_PRICES": str(tmp_path / "prices.yaml")}).out


def test_the_estimate_counts_a_caches_files_and_each_requests_files(cli, emulator, emulator_env, tmp_path):
    """A 135k-token handbook in the cache, read by 40 requests: ~5.4M cached tokens, as the
    emulator (by the service's rules) then counts them. A budget that the old estimate passed
    now refuses before anything is uploaded."""
    from batchflow.state.store import LocalStore

    handbook = "Refunds are given within thirty days of purchase. " * 10_800  # 540,000 characters
    write(tmp_path / "pipelines/handbook.txt", handbook)
    _png(tmp_path / "pipelines/chart.png", 1000, 800)  # 258 tokens per tile: 2 x 2 tiles
    _pipeline(
        tmp_path,
        rows=40,
        extra="    cache: {files: [handbook.txt], ttl: 1h}\n",
    )
    spec = tmp_path / "pipelines/tags.yaml"
    spec.write_text(spec.read_text().replace('"Say {{ word }}"', '"Say {{ word }}", files: [chart.png]'))
    plan = cli("plan", "--json")
    est = json.loads(plan.out)["pipelines"][0]["estimate"]
    assert 40 * 135_000 <= est["cached_tokens"] <= 40 * 135_100  # the file, and the cache's JSON
    assert est["input_tokens"] >= 40 * 4 * 258
    refused = cli("apply", "--max-usd", "0.05")
    assert refused.code == 1 and "over the budget of $0.05" in refused.err
    assert cli("apply", "--wait").code == 0
    (shard,) = LocalStore(emulator_env["BATCHFLOW_STATE"]).load("tags").shards.values()
    assert abs(shard.usage["cached"] - est["cached_tokens"]) <= 0.01 * est["cached_tokens"]
    assert (
        abs(shard.usage["prompt"] - est["input_tokens"] - est["cached_tokens"]) <= 0.01 * est["cached_tokens"]
    )


def _png(path, width: int, height: int) -> None:
    """A PNG header that says its size: all the service's rule (and the emulator's) reads."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
