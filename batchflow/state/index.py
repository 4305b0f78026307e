"""The request index: which shard holds each request, and where its result is, on disk.

Sets of request hashes grow with the input; kept in SQLite next to the state
document, they cost the same few megabytes of memory for a thousand records
or for ten million. Lookups go by chunks of hashes (`CHUNK`), so a scan makes
one query per chunk, not one per record.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import json
import operator
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import orjson

CHUNK = 500  # hashes per query (SQLite's default limit on parameters is far above)
# Memory a scan's check for duplicate keys may take (the rest of the keys go to disk): about
# 250,000 short keys. A key costs its characters and about _KEY_COST bytes more (its str, its
# set entry, its place in the batches kept).
SEEN_BYTES = 32 * 1024 * 1024
_KEY_COST = 120
RESULTS_AT_ONCE = 50_000  # result rows held before they are indexed: memory bounded by this
# Per-request errors worth another try; others (400 and the like) would fail the same way again.
RETRYABLE_CODES = {None, 408, 429, 500, 502, 503, 504}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shard_requests (hash TEXT, shard TEXT, PRIMARY KEY (hash, shard)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    hash TEXT PRIMARY KEY,
    shard TEXT NOT NULL,
    offset INTEGER NOT NULL,
    state TEXT NOT NULL,          -- ok | error (for good) | retry (a retryable error)
    tries INTEGER NOT NULL,       -- retryable errors so far, in this retry round
    round INTEGER NOT NULL DEFAULT 0  -- the retry round of the shard that gave it (apply --retry-errors)
) WITHOUT ROWID;
-- Shards whose result file is indexed, with its number of result lines (NULL: not counted then).
CREATE TABLE IF NOT EXISTS indexed (shard TEXT PRIMARY KEY, lines INTEGER) WITHOUT ROWID;
-- Each record's latest request: a new request for a key whose earlier one was answered is paid again.
CREATE TABLE IF NOT EXISTS record_keys (key TEXT PRIMARY KEY, hash TEXT NOT NULL) WITHOUT ROWID;
"""


class RequestIndex:
    """Opened read-only (`plan`) it never writes; a missing file is then an empty index."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path, self.readonly = path, readonly
        self._files: dict[str, int] = {}  # the files of the scan's source, numbered (first_seen)
        # Keys seen by the current scan: in this set, with their batches (where each key is), while
        # they fit in SEEN_BYTES, then in a table (seen_keys), so that memory does not grow.
        self._seen: set[str] = set()
        self._kept: list[tuple[list[str], list[str], Sequence[int]]] = []
        self._room = SEEN_BYTES

    @functools.cached_property
    def db(self) -> sqlite3.Connection:
        """Connected on first use: a plan or poll that finds its scan memoized never reads the
        index, and opening it was the largest part of such a plan of a small pipeline."""
        path, readonly = self.path, self.readonly
        if readonly and not path.exists():
            db = sqlite3.connect(":memory:", isolation_level=None)
        elif readonly:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None)  # explicit transactions below
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        if not readonly or not path.exists():
            db.executescript(_SCHEMA)
        if not readonly and "round" not in _columns(db, "results"):  # an index written by batchflow 0.1
            db.execute("ALTER TABLE results ADD COLUMN round INTEGER NOT NULL DEFAULT 0")
        if not readonly and "lines" not in _columns(db, "indexed"):  # an index of an earlier batchflow
            db.execute("ALTER TABLE indexed ADD COLUMN lines INTEGER")
        # Keys seen by the current scan: duplicates are an error, found without a set in memory.
        db.execute(
            "CREATE TEMP TABLE seen_keys (key TEXT PRIMARY KEY, file INTEGER, line INTEGER) WITHOUT ROWID"
        )
        return db

    @functools.cached_property
    def _round(self) -> str:
        # Read-only (plan) on an index of batchflow 0.1: every result is of round 0.
        return "round" if "round" in _columns(self.db, "results") else "0"

    @functools.cached_property
    def _keys(self) -> bool:
        return bool(self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'record_keys'").fetchone())

    def forget_keys(self) -> None:
        """Start a new scan of the source."""
        self._seen, self._kept, self._room = set(), [], SEEN_BYTES
        self.db.execute("DELETE FROM temp.seen_keys")
        self._files.clear()

    def first_seen(
        self, keys: list[str], uris: list[str], lines: Sequence[int]
    ) -> tuple[int, str, int] | None:
        """Record where each key of a batch of records is (uri, line); for the first record
        whose key was seen before in this scan, return (its position in the batch, the uri and
        line where the key was seen first)."""
        if self._room > 0:  # one step in C for the batch: where keys are is only read on a repeat
            before = len(self._seen)
            self._seen.update(keys)
            repeat = None if len(self._seen) - before == len(keys) else self._first_repeat(keys, uris, lines)
            self._kept.append((keys, uris, lines))
            self._room -= sum(map(len, keys)) + _KEY_COST * len(keys)
            return repeat
        if self._seen.isdisjoint(keys) and self._store_seen(keys, uris, lines):
            return None
        return self._first_repeat(keys, uris, lines)

    def _store_seen(self, keys: list[str], uris: list[str], lines: Sequence[int]) -> bool:
        """Put the keys and their locations in the table of seen keys; whether all were new."""
        files = self._files  # the table holds each file's number: a long uri per key would cost
        rows = sorted(
            (key, files.setdefault(uri, len(files)), line)
            for key, uri, line in zip(keys, uris, lines, strict=True)
        )
        before = self.db.total_changes
        with self._transaction():  # else each row is a transaction of its own: half the cost
            self.db.executemany("INSERT OR IGNORE INTO temp.seen_keys VALUES (?, ?, ?)", rows)
        return self.db.total_changes - before == len(rows)

    def _first_repeat(
        self, keys: list[str], uris: list[str], lines: Sequence[int]
    ) -> tuple[int, str, int] | None:
        """first_seen's answer, from the batches kept and the table: slow, and rare."""
        wanted = set(keys)
        earlier: dict[str, tuple[str, int]] = {}  # where each of the batch's keys was first seen
        for kept in self._kept:
            for key, uri, line in zip(*kept, strict=True):
                if key in wanted:
                    earlier.setdefault(key, (uri, line))
        if self._room <= 0:  # the table is in use: this batch's new keys may be
            marks = ",".join("?" * len(keys))  # there already, at their own location then
            found = self.db.execute(
                f"SELECT key, file, line FROM temp.seen_keys WHERE key IN ({marks})", keys
            )
            files = list(self._files)
            for key, file, line in found:
                earlier.setdefault(key, (files[file], line))
        for i, here in enumerate(zip(uris, lines, strict=True)):
            was = earlier.setdefault(keys[i], here)
            if was != here:
                return i, *was
        return None

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def add_shard(self, shard: str, rows: Iterable[tuple[str, str | None]]) -> None:
        """Record a shard's requests (hash, record key), the latest request of each record; idempotent."""
        rows = list(rows)
        # In key order: inserts then walk each B-tree once instead of landing on random pages
        # (twice as fast at 200k requests). A shard holds each record key once at most.
        with self._transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO shard_requests VALUES (?, ?)", ((h, shard) for h, _ in sorted(rows))
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO record_keys VALUES (?, ?)",
                sorted((k, h) for h, k in rows if k is not None),
            )

    @contextlib.contextmanager
    def adding_shards(self) -> Iterator[Callable[[str, list[tuple[str, str]]], None]]:
        """add_shard, on a thread and a connection of its own: SQLite's inserts (most of the
        cost of writing a prepare's shards) run beside the scan instead of inside it. One
        shard at a time is in flight, so memory stays bounded; every shard given is indexed
        when the block ends, and an error in indexing one is raised here."""
        writer = RequestIndex(self.path)
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batchflow-index")
        pending: list[concurrent.futures.Future] = []

        def add(shard: str, rows: list[tuple[str, str]]) -> None:
            if pending:
                pending.pop().result()
            pending.append(pool.submit(writer.add_shard, shard, rows))

        try:
            yield add
            if pending:
                pending.pop().result()
        finally:
            pool.submit(writer.close).result()  # the connection is the thread's: closed there
            pool.shutdown()

    def answered_before(self, pairs: list[tuple[str, str]]) -> int:
        """Of (key, hash) pairs, how many records had another request that was answered."""
        if not self._keys or not pairs or self._no_results():
            return 0
        marks = ",".join("?" * len(pairs))
        rows = self.db.execute(
            f"SELECT k.key, k.hash FROM record_keys k JOIN results r ON r.hash = k.hash "
            f"WHERE k.key IN ({marks}) AND r.state = 'ok'",
            [key for key, _ in pairs],
        )
        before = dict(rows)
        return sum(1 for key, digest in pairs if before.get(key, digest) != digest)

    def add_results(
        self, shard: str, path: Path, round: int = 0, refusals: frozenset[str] = frozenset()
    ) -> dict[str, int]:
        """Index a downloaded result file of a shard of retry round `round`, once per shard
        however often it is called; returns the tokens its responses used. An answer the
        service refused (a blocked prompt, or a finish reason in `refusals`: the pipeline's
        errors.finish_reasons) is indexed as an error, so `--retry-errors` sends it again."""
        usage = {"prompt": 0, "output": 0, "cached": 0}
        retries: list[tuple[str | None, str, int, int]] = []  # a line with no key: None
        final: list[tuple[str | None, str, int, str, int]] = []
        with self._transaction():
            first = not self.db.execute("SELECT 1 FROM indexed WHERE shard = ?", (shard,)).fetchone()
            offset = lines = 0
            with open(path, "rb") as f:
                for line in f:
                    if line.strip():
                        lines += 1
                        result = parse_result(line)
                        if first:
                            digest, error = result.get("key"), result.get("error")
                            if error is not None and error.get("code") in RETRYABLE_CODES:
                                retries.append((digest, shard, offset, round))
                            else:
                                state = "error" if error is not None or refused(result, refusals) else "ok"
                                final.append((digest, shard, offset, state, round))
                            if len(retries) + len(final) >= RESULTS_AT_ONCE:
                                self._add_results(retries, final)
                        counts = (result.get("response") or {}).get("usageMetadata") or {}
                        usage["prompt"] += counts.get("promptTokenCount", 0)
                        usage["output"] += counts.get("candidatesTokenCount", 0)
                        usage["cached"] += counts.get("cachedContentTokenCount", 0)
                    offset += len(line)
            if first:
                self._add_results(retries, final)
                self.db.execute("INSERT INTO indexed VALUES (?, ?)", (shard, lines))
        return usage

    def _add_results(self, retries: list[tuple], final: list[tuple]) -> None:
        """Index the rows gathered, then forget them. One statement per kind, rows in hash
        order: inserts then walk the B-tree once instead of landing on random pages (half the
        time). The sort is stable, so a hash a file holds twice keeps its lines' order; between
        the kinds order does not matter, as an answer or error of a round is never replaced by
        a retryable error of the same round, and the reverse always is."""
        by_hash = operator.itemgetter(0)
        # A retryable error never replaces an answer, nor an error of this round; it counts
        # as one more try, the first of a new round after `apply --retry-errors`.
        self.db.executemany(
            "INSERT INTO results VALUES (?, ?, ?, 'retry', 1, ?) ON CONFLICT (hash) DO UPDATE SET "
            "tries = CASE WHEN round < excluded.round THEN 1 ELSE tries + 1 END, state = 'retry', "
            "shard = excluded.shard, offset = excluded.offset, round = excluded.round "
            "WHERE state = 'retry' OR (state = 'error' AND round < excluded.round)",
            sorted(retries, key=by_hash),
        )
        self.db.executemany(
            "INSERT INTO results VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (hash) DO UPDATE SET "
            "shard = excluded.shard, offset = excluded.offset, state = excluded.state, "
            "tries = 0, round = excluded.round WHERE round <= excluded.round",
            sorted(final, key=by_hash),
        )
        retries.clear()
        final.clear()

    def covered(
        self,
        hashes: Sequence[str],
        live: set[str],
        attempts: int,
        round: int = 0,
        used: set[str] | None = None,
    ) -> set[str]:
        """Of `hashes`, those that need no new job: in a `live` shard, or answered for good
        (a success; in retry round `round`, a permanent error or `attempts` retryable ones).
        `used` gathers the live shards that hold one of `hashes`."""
        marks = ",".join("?" * len(hashes))
        found: set[str] = set()
        if not self._no_results():
            found.update(
                h
                for (h,) in self.db.execute(
                    f"SELECT hash FROM results WHERE hash IN ({marks}) AND (state = 'ok' OR "
                    f"({self._round} >= ? AND (state = 'error' OR tries >= ?)))",
                    (*hashes, round, attempts),
                )
            )
        if live:
            shards = ",".join("?" * len(live))
            rows = self.db.execute(
                f"SELECT hash, shard FROM shard_requests WHERE hash IN ({marks}) "
                f"AND {_NOT_SEARCHED} IN ({shards})",
                (*hashes, *live),
            ).fetchall()
            found.update(h for h, _ in rows)
            if used is not None:
                used.update(shard for _, shard in rows)
        return found

    def _no_results(self) -> bool:
        """A new pipeline's scan asks nothing of an empty results table (one cheap query)."""
        return self.db.execute("SELECT 1 FROM results LIMIT 1").fetchone() is None

    def results(self, hashes: list[str]) -> dict[str, tuple[str, int]]:
        """Where each hash's latest result line is: (shard, byte offset)."""
        marks = ",".join("?" * len(hashes))
        rows = self.db.execute(f"SELECT hash, shard, offset FROM results WHERE hash IN ({marks})", hashes)
        return {h: (shard, offset) for h, shard, offset in rows}

    def result_shards(self, path_of: Callable[[str], Path]) -> dict[str, bool]:
        """The shards whose result files hold a latest result, each with whether every line of
        its file is its request's latest result (no later round, no second line for a
        request): the join may then take its lines as the file has them, checking only each
        line's key, instead of looking each request up. `path_of`: a shard's result file, to
        count the lines of one indexed before the count was kept."""
        counts = dict(self.db.execute("SELECT shard, lines FROM indexed"))
        for shard, lines in counts.items():
            if lines is None:
                with open(path_of(shard), "rb") as f:
                    counts[shard] = sum(1 for line in f if line.strip())
                if not self.readonly:
                    self.db.execute("UPDATE indexed SET lines = ? WHERE shard = ?", (counts[shard], shard))
        # Each result row is one line of its shard: the counts agree where no line was replaced.
        (rows,) = self.db.execute("SELECT count(*) FROM results").fetchone()
        if rows == sum(counts.values()):
            return {shard: True for shard, lines in counts.items() if lines}
        latest = self.db.execute("SELECT shard, count(*) FROM results GROUP BY shard")
        return {shard: n == counts.get(shard) for shard, n in latest}

    def shards_of(self, hashes: list[str], among: set[str]) -> dict[str, str]:
        """For each hash, one shard of `among` that holds it."""
        if not among:
            return {}
        marks, shards = ",".join("?" * len(hashes)), ",".join("?" * len(among))
        rows = self.db.execute(
            f"SELECT hash, shard FROM shard_requests WHERE hash IN ({marks}) "
            f"AND {_NOT_SEARCHED} IN ({shards})",
            (*hashes, *among),
        )
        return dict(rows)


# `hash IN (...) AND shard IN (...)` makes SQLite seek every (hash, shard) pair of the primary
# key: a chunk's 500 hashes times every live shard (100 shards: 50,000 seeks a chunk). With the
# unary + (a no-op on its value), it seeks each hash once and filters its few rows by shard.
_NOT_SEARCHED = "+shard"


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def refused(result: dict, finish_reasons: frozenset[str]) -> bool:
    """Whether a response is a refusal: its prompt blocked, or its answer stopped for a reason
    the pipeline counts as an error. Asked again, the service may answer."""
    response = result.get("response") or {}
    candidates = response.get("candidates")
    if not candidates:
        return bool((response.get("promptFeedback") or {}).get("blockReason"))
    return bool(finish_reasons) and candidates[0].get("finishReason") in finish_reasons


def parse_result(line: bytes) -> dict:
    """One line of a result file, parsed by orjson: several times faster than json, and the
    same dicts, but for integers past 64 bits, which it reads as floats. Callers that pass the
    service's JSON through untouched (`response`, function call arguments) use json instead."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)  # NaN and the like, which json takes


def chunks(items: Iterable, size: int = CHUNK) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):  # islice: no Python step per item
        yield batch
