"""`plan` is a pure function of the state and the scan: no network, no files."""

from __future__ import annotations

from batchflow.prepare.shards import KEYS_SUFFIX, ShardBuilder, ShardInfo, build, shard_rows
from batchflow.run.reconcile import Kind, Rules, Scan, next_action, plan, results_fingerprint
from batchflow.state.store import OutputRecord, PipelineState, Shard, ShardStatus


def _scan(new=(), digest="d1", exists=True):
    return Scan(requests=3, new_shards=list(new), digest=digest, output_exists=exists)


def test_new_requests_are_submitted():
    actions = plan(PipelineState(pipeline="p"), _scan([ShardInfo("a" * 32, 3, 100)]), Rules(3), "out.jsonl")
    assert [a.kind for a in actions] == [Kind.SUBMIT]
    assert actions[0].symbol == "+"


def test_each_status_has_its_next_step():
    def kind(status, **kw):
        action = next_action(Shard(id="s", requests=1, bytes=1, status=status, **kw), attempts=3)
        return action and action.kind

    assert kind(ShardStatus.PREPARED) is Kind.UPLOAD
    assert kind(ShardStatus.UPLOADED) is Kind.CREATE
    assert kind(ShardStatus.CREATING) is Kind.ADOPT
    assert kind(ShardStatus.SUBMITTED, job_state="JOB_STATE_RUNNING") is Kind.POLL
    assert kind(ShardStatus.SUBMITTED, job_state="JOB_STATE_SUCCEEDED") is Kind.DOWNLOAD
    assert kind(ShardStatus.FAILED, attempt=1) is Kind.RETRY
    assert kind(ShardStatus.FAILED, attempt=3) is None
    assert kind(ShardStatus.DONE) is None


def test_output_is_written_once_everything_settled():
    state = PipelineState(
        pipeline="p", shards={"s": Shard(id="s", requests=3, bytes=1, status=ShardStatus.DONE)}
    )
    assert [a.kind for a in plan(state, _scan(), Rules(3), "o")] == [Kind.OUTPUT]
    results = results_fingerprint(state)
    state.output = OutputRecord(uri="o", digest="d1", results=results, records=3, errors=0, written_at="t")
    assert plan(state, _scan(), Rules(3), "o") == []
    assert [a.kind for a in plan(state, _scan(exists=False), Rules(3), "o")] == [Kind.OUTPUT]
    assert [a.kind for a in plan(state, _scan(digest="d2"), Rules(3), "o")] == [Kind.OUTPUT]
    # A retried shard's answers arrived after the output was written: it is written again.
    state.shards["s"].attempt = 2
    (action,) = plan(state, _scan(), Rules(3), "o")
    assert action.kind is Kind.OUTPUT and "new results arrived" in action.reason


def test_no_output_while_a_job_runs():
    state = PipelineState(
        pipeline="p",
        shards={
            "s": Shard(
                id="s",
                requests=3,
                bytes=1,
                status=ShardStatus.SUBMITTED,
                job_state="JOB_STATE_PENDING",
            )
        },
    )
    assert [a.kind for a in plan(state, _scan(), Rules(3), "o")] == [Kind.POLL]


def _chunks(rows, size=500):
    """Rows (line, key, hash) as build() takes them: chunks of columns."""
    return [tuple(zip(*rows[i : i + size], strict=True)) for i in range(0, len(rows), size)]


def test_shard_ids_depend_only_on_content(tmp_path):
    lines = [(f'{{"key": "{i}"}}', f"record-{i}", f"h{i}") for i in range(5)]
    dry = build(_chunks(lines), 2, 10**9, None)
    written = build(_chunks(lines), 2, 10**9, tmp_path)
    assert dry == written
    assert [s.requests for s in dry] == [2, 2, 1]
    assert sorted(p.stem for p in tmp_path.glob("*.jsonl")) == sorted(s.id for s in dry)
    assert sorted(p.stem for p in tmp_path.glob("*" + KEYS_SUFFIX)) == sorted(s.id for s in dry)
    # Beside each shard, the records' own keys, line for line.
    assert list(shard_rows(tmp_path / f"{dry[0].id}.jsonl")) == [("h0", "record-0"), ("h1", "record-1")]
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_shards_are_cut_by_bytes_too():
    lines = [("x" * 99, "k", "h")] * 5  # 100 bytes each with the newline
    assert [s.requests for s in build(_chunks(lines), 100, 250, None)] == [2, 2, 1]


def _built(rows, size, max_requests, max_bytes, folder):
    """build() of `rows` in chunks of `size` (None: ShardBuilder.add of each row, one by one):
    the shards, and the rows indexed for each."""
    indexed = []
    builder = ShardBuilder(max_requests, max_bytes, folder, on_seal=lambda _, r: indexed.append(r))
    if size is not None:
        return build(_chunks(rows, size), max_requests, max_bytes, folder, on_seal=builder.on_seal), indexed
    for row in rows:
        builder.add(*row)
    return builder.finish(), indexed


def test_shards_are_the_same_however_the_requests_are_chunked(tmp_path):
    """A chunk is added at once when it fits in the shard being built, else line by line: the
    files, ids and indexed rows must be those of adding every line on its own."""
    rows = [(f'{{"key":"h{i}","n":"{"é" * (i % 7)}"}}', f"k{i}", f"h{i}") for i in range(200)]
    for max_requests, max_bytes in ((10**6, 10**9), (16, 10**9), (10**6, 700), (9, 333)):
        single = tmp_path / f"single-{max_requests}-{max_bytes}"
        expected = _built(rows, None, max_requests, max_bytes, single)
        for size in (1, 3, 7, 50, 200):
            chunked = tmp_path / f"chunked-{size}-{max_requests}-{max_bytes}"
            assert _built(rows, size, max_requests, max_bytes, chunked) == expected
            assert build(_chunks(rows, size), max_requests, max_bytes, None) == expected[0]
            for name in (shard.id + suffix for shard in expected[0] for suffix in (".jsonl", KEYS_SUFFIX)):
                assert (chunked / name).read_bytes() == (single / name).read_bytes()


def test_the_same_lines_sent_again_get_a_new_shard_id():
    lines = [('{"key": "a"}', "a", "h")]
    (first,) = build(_chunks(lines), 10, 10**9, None)
    (again,) = build(_chunks(lines), 10, 10**9, None, taken={first.id})
    assert again.id != first.id and again.requests == 1


def _shard(name, status, **kw):
    return Shard(id=name, requests=2, bytes=10, status=status, **kw)


def test_plan_holds_back_what_has_no_job_slot_as_apply_does():
    state = PipelineState(
        pipeline="p",
        shards={
            "run": _shard("run", ShardStatus.SUBMITTED, job_name="batches/1", job_state="JOB_STATE_RUNNING"),
            "old": _shard("old", ShardStatus.SUBMITTED, job_name="batches/2", job_state="JOB_STATE_RUNNING"),
            "wait": _shard("wait", ShardStatus.PREPARED),
        },
    )
    new = [ShardInfo("n1", 2, 10), ShardInfo("n2", 2, 10)]
    actions = plan(state, _scan(new), Rules(3, max_jobs=2), "o")
    by_shard = {a.shard: a for a in actions}
    assert by_shard["wait"].kind is Kind.HOLD and "waits for a job slot" in by_shard["wait"].reason
    assert by_shard["wait"].symbol == "="
    assert all("waits for a job slot" in by_shard[n].reason for n in ("n1", "n2"))
    # A superseded job gives its slot up: the waiting shard takes it, the new ones still wait.
    superseded = Scan(requests=3, new_shards=new, digest="d1", output_exists=True, superseded=["old"])
    by_shard = {a.shard: a for a in plan(state, superseded, Rules(3, max_jobs=2), "o")}
    assert by_shard["old"].kind is Kind.CANCEL and by_shard["wait"].kind is Kind.UPLOAD
    assert "waits" in by_shard["n1"].reason and "waits" in by_shard["n2"].reason
    # No limit: nothing waits.
    assert not any(a.kind is Kind.HOLD for a in plan(state, _scan(new), Rules(3), "o"))


def test_plan_says_which_shards_go_inline_and_which_jobs_it_would_cancel_as_stuck():
    new = [ShardInfo("small", 2, 10), ShardInfo("large", 2, 5000)]
    reasons = [
        a.reason for a in plan(PipelineState(pipeline="p"), _scan(new), Rules(3, inline_below=1000), "o")
    ]
    assert reasons[0].endswith("(10 bytes, inline)") and reasons[1].endswith("(5000 bytes)")
    pending = _shard(
        "s",
        ShardStatus.SUBMITTED,
        job_name="batches/1",
        job_state="JOB_STATE_PENDING",
        submitted_at="2026-12-01T00:00:00+00:00",
    )
    state = PipelineState(pipeline="p", shards={"s": pending})
    then = 1796083200.0 + 100  # 2026-12-01T00:00:00Z, 100 s later
    rules = Rules(3, pending_timeout=3600, now=then)
    (poll,) = plan(state, _scan(), rules, "o")
    assert "cancel" not in poll.reason
    (poll,) = plan(state, _scan(), Rules(3, pending_timeout=3600, now=then + 3600), "o")
    assert (
        poll.kind is Kind.POLL and "cancel it if still pending (batch.pending_timeout: 3600 s)" in poll.reason
    )


def test_auto_chooses_flex_for_small_work_and_for_stages():
    rules = Rules(3, auto_below=100, inline_below=1000)
    assert rules.choose(99)[0] == "flex" and rules.choose(100)[0] is None
    assert Rules(3, auto_below=100, stage=True).choose(10_000)[0] == "flex"
    assert Rules(3, tier="flex").choose(10_000) == ("flex", "")
    assert not rules.inline(10, "flex") and rules.inline(10)  # calls travel in no create
