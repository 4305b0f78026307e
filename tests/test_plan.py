"""`plan` is a pure function of the state and the scan: no network, no files."""

from __future__ import annotations

from batchflow.prepare.shards import KEYS_SUFFIX, ShardBuilder, ShardInfo, build, shard_rows
from batchflow.run.reconcile import Kind, Scan, next_action, plan, results_fingerprint
from batchflow.state.store import OutputRecord, PipelineState, Shard, ShardStatus


def _scan(new=(), digest="d1", exists=True):
    return Scan(requests=3, new_shards=list(new), digest=digest, output_exists=exists)


def test_new_requests_are_submitted():
    actions = plan(PipelineState(pipeline="p"), _scan([ShardInfo("a" * 32, 3, 100)]), 3, "out.jsonl")
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
    assert [a.kind for a in plan(state, _scan(), 3, "o")] == [Kind.OUTPUT]
    results = results_fingerprint(state)
    state.output = OutputRecord(uri="o", digest="d1", results=results, records=3, errors=0, written_at="t")
    assert plan(state, _scan(), 3, "o") == []
    assert [a.kind for a in plan(state, _scan(exists=False), 3, "o")] == [Kind.OUTPUT]
    assert [a.kind for a in plan(state, _scan(digest="d2"), 3, "o")] == [Kind.OUTPUT]
    # A retried shard's answers arrived after the output was written: it is written again.
    state.shards["s"].attempt = 2
    (action,) = plan(state, _scan(), 3, "o")
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
    assert [a.kind for a in plan(state, _scan(), 3, "o")] == [Kind.POLL]


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
