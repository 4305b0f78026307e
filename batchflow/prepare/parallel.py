"""Rendering on several cores: a large local JSONL source is cut into batches of lines, which
worker processes parse and render while this process indexes and shards what comes back; for
the output join, the workers also join each record to its result and encode its row, and this
process only writes.

Batches come back in the order they went out, so request hashes, shard ids and the order of
everything downstream are those of a serial render (tests hold the two byte for byte). Each
worker builds its own Renderer from the pipeline, so templates keep their sandbox and strict
undefined; an error in a worker comes back as data and is raised here, at its place in the
order, with the serial path's message.
"""

from __future__ import annotations

import collections
import io
import itertools
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from ..errors import SourceError
from ..output.join import JoinedBatch, Joiner, Keyed, RowForm, keyed
from ..spec.models import LoadedPipeline
from ..spec.pricing import estimate_line
from ..state.index import CHUNK, RequestIndex
from ..state.store import Shard
from . import order
from .render import FileRef, Rendered, Renderer
from .sources import Record, infer_format, jsonl_batch, jsonl_record

# Below this much source, starting workers costs more than it saves: on 2 cores, a prepare of
# 13.5 MB took as long either way, of 18 MB a fifth less on workers, of 9 MB a fifth more.
MIN_BYTES = 16 * 1024 * 1024
BATCH_LINES = 2_000
BLOCK = 1 << 20  # bytes of the source read at once


class ScanBatch(NamedTuple):
    """Consecutive requests of the source as a scan needs them, a list per column: made on the
    workers, a batch crosses as six lists (a tuple per request took a quarter longer to pickle
    and unpickle), and the scan takes each column in one step instead of a step per request."""

    keys: list[str]
    hashes: list[str]
    lines: list[str]  # batch input lines
    uris: list[str]  # each record's source file
    numbers: Sequence[int]  # each record's line number there
    estimates: list[int]  # estimated input tokens


def render_source(
    pipeline: LoadedPipeline, renderer: Renderer, records: Iterator[Record]
) -> Iterator[ScanBatch]:
    """The source's requests (`renderer.render(records)`) as a scan needs them, on several
    processes when the source is worth it."""
    files = _parallel_files(pipeline)
    if files is None:
        return _serial_batches(renderer, records)
    return _in_order(pipeline, None, files, lambda answer: _collect(answer, renderer))


def _serial_batches(renderer: Renderer, records: Iterator[Record]) -> Iterator[ScanBatch]:
    """Batches of CHUNK requests, rendered here. As a worker's, a batch that meets an error
    gives the requests before it, then raises it."""
    position = 0
    while True:
        chunk: list[Record] = []
        unreadable = None
        try:
            for record in records:
                chunk.append(record)
                if len(chunk) == CHUNK:
                    break
        except SourceError as exc:
            unreadable = exc
        if chunk:
            yield from _render_chunk(renderer, chunk, position)
        if unreadable is not None:
            raise unreadable
        if len(chunk) < CHUNK:
            return
        position += CHUNK


def _render_chunk(renderer: Renderer, chunk: list[Record], position: int) -> Iterator[ScanBatch]:
    """The chunk's requests (its first record at `position` in the source) as one batch, or,
    if a record fails to render, those before it, then its error."""
    plain = renderer.render_plain([r.data for r in chunk])
    if plain is not None:
        yield _scan_columns(*plain, [r.uri for r in chunk], [r.line for r in chunk])
        return
    rendered: list[Rendered] = []
    try:
        rendered.extend(renderer.render(iter(chunk), start=position))
    except SourceError:
        if rendered:
            yield _scan_batch(rendered, renderer)
        raise
    yield _scan_batch(rendered, renderer)


def _scan_batch(rendered: list[Rendered], renderer: Renderer) -> ScanBatch:
    return _scan_columns(
        [r.key for r in rendered],
        [r.hash for r in rendered],
        [r.line for r in rendered],
        [r.record.uri for r in rendered],
        [r.record.line for r in rendered],
        renderer.files.seen,
    )


def _scan_columns(
    keys: list[str],
    hashes: list[str],
    lines: list[str],
    uris: list[str],
    numbers: Sequence[int],
    files: dict[str, FileRef] | None = None,
) -> ScanBatch:
    estimates = [estimate_line(line, files) for line in lines] if files else list(map(estimate_line, lines))
    return ScanBatch(keys, hashes, lines, uris, numbers, estimates)


def join_source(
    pipeline: LoadedPipeline,
    records: Iterator[Record],
    index: RequestIndex,
    result_path: Callable[[str], Path],
    failed: dict[str, Shard],
    scan_order: Path | None,
    form: RowForm,
) -> Iterator[JoinedBatch]:
    """The output's rows, in the source's order and in batches, in `form` (join.Joiner), on
    several processes when the source is worth it. Those read the index and
    the result files themselves: every result file a row may need is fetched first. Keys and
    hashes come from `scan_order` (order.py) when given, the source being then read only for
    its records' kept columns; else each record is rendered again."""
    files = _parallel_files(pipeline)
    shards = index.result_shards(result_path)
    unreplaced = frozenset(shard for shard, whole in shards.items() if whole)
    if files is None:
        joiner = Joiner(pipeline.spec, index, result_path, failed, form, unreplaced)
        if scan_order is None:
            ordered = keyed(Renderer(pipeline).render(records))
        else:
            ordered = _with_order(records, scan_order)
        try:
            yield from joiner.batches(ordered)
        finally:
            joiner.close()
        return
    paths = {shard: str(result_path(shard)) for shard in shards}
    setup = _JoinSetup(str(index.path), paths, failed, form, unreplaced)
    cursor = order.Cursor(scan_order) if scan_order is not None else None
    yield from _in_order(pipeline, setup, files, _collect_rows, cursor)


def _with_order(records: Iterator[Record], scan_order: Path) -> Iterator[Keyed]:
    """The records with their keys and hashes from the order file; the two must end together."""
    pairs = (pair for keys, hashes in order.chunks(scan_order) for pair in zip(keys, hashes, strict=True))
    for record, pair in itertools.zip_longest(records, pairs):
        if record is None or pair is None:
            raise order.StaleOrder(scan_order)
        yield pair[0], pair[1], record.data


def _workers() -> int:
    """One a core, up to 8. In a scan this process indexes too, yet with a worker fewer it
    waited for them a third of the time (and a single worker is not worth its start)."""
    return min(os.cpu_count() or 1, 8)


def _min_bytes() -> int:
    return int(os.environ.get("BATCHFLOW_PARALLEL_MIN_BYTES", MIN_BYTES))


def _parallel_files(pipeline: LoadedPipeline) -> list[str] | None:
    """The source's files, when they are worth workers: all local, uncompressed JSONL, big
    enough, and there are cores to share them."""
    import fsspec

    if _workers() < 2:
        return None
    source = pipeline.spec.source
    if source.uri is None:  # a stage's records are another pipeline's rows, not a file
        return None
    uri = pipeline.resolve(source.uri)
    if "://" in uri or (source.format or infer_format(uri)) != "jsonl":
        return None
    try:
        files = sorted(fsspec.open_files(uri, mode="rb", compression="infer"), key=lambda f: f.path)
    except (OSError, ValueError):
        return None  # the serial path says what is wrong
    if not files or any(f.compression or infer_format(f.path) not in (None, "jsonl") for f in files):
        return None
    try:
        size = sum(os.path.getsize(f.path) for f in files)
    except OSError:
        return None
    return [f.path for f in files] if size >= _min_bytes() else None


def _batches(paths: list[str]) -> Iterator[tuple[str, int, Sequence[int], list[str]]]:
    """(file, position of its first record, line numbers, lines): the source's records a batch
    at a time, split into lines as the serial reader splits them; blank lines are skipped
    there and here alike."""
    position = 0
    for path in paths:
        with open(path, "rb") as raw:
            for numbers, lines in _lines(raw, path):
                yield path, position, numbers, lines
                position += len(lines)


def _lines(raw: BinaryIO, path: str) -> Iterator[tuple[Sequence[int], list[str]]]:
    """A file's non-blank lines and their numbers, up to BATCH_LINES at a time, cut from
    blocks of BLOCK bytes: a split and two counts a block, where reading line by line took a
    Python step per line (the main process's largest cost in a scan). A block that holds a
    carriage return or bytes that are not UTF-8 goes, with the rest of the file, to
    `_lines_one_by_one`, which splits and fails exactly as the serial reader does."""
    carry, offset, n = b"", 0, 1  # the bytes after the last newline, where they start, their line
    while True:
        block = raw.read(BLOCK)
        data = carry + block
        if not data:
            return
        cut = data.rfind(b"\n") + 1 if block else len(data)  # the last line may have no newline
        if cut == 0:  # no line ends in the block
            carry = data
            continue
        try:
            text: str | None = data[:cut].decode()
        except UnicodeDecodeError:
            text = None
        if text is None or "\r" in text:
            raw.seek(offset)
            yield from _lines_one_by_one(raw, path, n)
            return
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()  # the empty string after the last newline
        first, n = n, n + len(lines)
        if text.startswith("{") and text.count("\n{") == len(lines) - 1:  # no line is blank
            numbers: Sequence[int] = range(first, n)
        else:
            numbers = [first + i for i, line in enumerate(lines) if line.strip()]
            lines = [lines[i - first] for i in numbers]
        for i in range(0, len(lines), BATCH_LINES):
            yield numbers[i : i + BATCH_LINES], lines[i : i + BATCH_LINES]
        carry, offset = data[cut:], offset + cut
        if not block:
            return


def _lines_one_by_one(raw: BinaryIO, path: str, first: int) -> Iterator[tuple[list[int], list[str]]]:
    """As `_lines`, from line number `first` on, read as the serial reader reads."""
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    numbers: list[int] = []
    lines: list[str] = []
    try:
        for n, line in enumerate(text, first):
            if not line.strip():
                continue
            numbers.append(n)
            lines.append(line)
            if len(lines) >= BATCH_LINES:
                yield numbers, lines
                numbers, lines = [], []
    except UnicodeDecodeError as exc:
        if lines:
            yield numbers, lines
        raise SourceError(f"not UTF-8 text: {exc.reason}", uri=path) from None
    if lines:
        yield numbers, lines


def _in_order(
    pipeline: LoadedPipeline,
    join: _JoinSetup | None,
    paths: list[str],
    collect: Callable[[tuple], Iterator],
    cursor: order.Cursor | None = None,
) -> Iterator:
    """Batches of the source's lines through the workers (_do_batch), and what each gives back
    through `collect`, in the source's order; with a `cursor`, each batch goes with its
    records' keys and hashes."""
    workers, context = _workers(), _context(join)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start, initargs=(pipeline, join)
    ) as pool:
        pending: collections.deque[Future] = collections.deque()
        unreadable = None
        try:
            try:
                for batch in _batches(paths):
                    keyed_by = () if cursor is None else (cursor.take(len(batch[3])),)
                    if cursor is not None and keyed_by and len(keyed_by[0][0]) < len(batch[3]):
                        raise order.StaleOrder(cursor.path)
                    pending.append(pool.submit(_do_batch, *batch, *keyed_by))
                    if len(pending) >= 2 * workers + 2:  # bounded: memory does not grow with the source
                        yield from collect(pending.popleft().result())
                if cursor is not None and not cursor.done():
                    raise order.StaleOrder(cursor.path)
            except SourceError as exc:  # raised after the records read before it, as serially
                unreadable = exc
            while pending:
                yield from collect(pending.popleft().result())
            if unreadable is not None:
                raise unreadable
        finally:
            for future in pending:
                future.cancel()


def _context(join: _JoinSetup | None) -> multiprocessing.context.BaseContext:
    """Workers forked from this process when that is safe: for a scan (its workers touch no
    SQLite, whose state a fork would copy), on Linux, with no other thread in this process
    (gcsfs, SQLite, progress) that could hold a lock the fork copies held. They then start at
    once, with everything imported: a plan of 300k records took a third less time than with
    the fork server. Else started by a fresh process, sharing nothing with this one: where
    there is a fork server, it imports batchflow once and forks each worker ready to go;
    spawned, each worker imported it again (about 0.8 s of CPU a worker)."""
    if join is None and sys.platform == "linux" and _threads() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _threads() -> int:
    """This process's threads, those of C libraries included."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0  # unknown: not alone, for all we know


def _collect(answer: tuple, renderer: Renderer) -> Iterator[ScanBatch]:
    _, batch, seen, error = answer
    renderer.files.seen.update(seen)
    if batch.keys:
        yield batch
    _raise(error)


def _collect_rows(answer: tuple) -> Iterator[JoinedBatch]:
    _, batch, _, error = answer
    if batch.out_rows or batch.err_rows:
        yield batch
    _raise(error)


def _raise(error: tuple | None) -> None:
    if error is not None:
        message, uri, line = error
        raise SourceError(message, uri=uri, line=line)


@dataclass(frozen=True)
class _JoinSetup:
    """What a worker needs to join: the index (read only), result files, failed shards, and
    the form its rows go in."""

    index: str
    results: dict[str, str]
    failed: dict[str, Shard]
    form: RowForm
    unreplaced: frozenset[str]


# ---------------------------------------------------------------- in the workers

_renderer: Renderer | None = None
_joiner: Joiner | None = None


def _start(pipeline: LoadedPipeline, join: _JoinSetup | None) -> None:
    global _renderer, _joiner
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    _renderer = Renderer(pipeline)
    if join is not None:
        index = RequestIndex(Path(join.index), readonly=True)
        _joiner = Joiner(
            pipeline.spec,
            index,
            lambda shard: Path(join.results[shard]),
            join.failed,
            join.form,
            join.unreplaced,
        )


def _exit_with_parent() -> None:
    """The pool's pipes never tell a worker that batchflow was killed (each worker holds their
    write ends too), so without this a kill -9 would leave its workers waiting for good."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


def _do_batch(
    path: str,
    position: int,
    numbers: Sequence[int],
    lines: list[str],
    keyed_by: tuple[list, list] | None = None,
) -> tuple[str, ScanBatch | JoinedBatch, dict, tuple | None]:
    """Parse and render a batch as the serial path does (sources._jsonl, Renderer.render), up
    to the first error; returns its requests (scans) or their joined rows (the output join),
    the files they named, and that error. With `keyed_by`, the batch's keys and hashes
    from the scan's order file, the join renders nothing."""
    if keyed_by is not None:
        return _join_keyed(path, numbers, lines, keyed_by)
    renderer = _renderer
    assert renderer is not None
    datas = jsonl_batch(lines)
    plain = renderer.render_plain(datas) if datas is not None else None
    if plain is not None and datas is not None:  # else record by record, which finds the same
        if _joiner is not None:
            keys, hashes, _ = plain
            return path, _joiner.batch(zip(keys, hashes, datas, strict=True)), {}, None
        return path, _scan_columns(*plain, [path] * len(lines), numbers), {}, None
    before = set(renderer.files.seen)
    rendered: list[Rendered] = []
    error = None
    try:
        records = (jsonl_record(line, path, n) for n, line in zip(numbers, lines, strict=True))
        rendered.extend(renderer.render(records, start=position))
    except SourceError as exc:
        error = (exc.message, exc.uri, exc.line)
    seen = {d: ref for d, ref in renderer.files.seen.items() if d not in before}
    if _joiner is not None:
        return path, _joiner.batch(keyed(rendered)), seen, error
    return path, _scan_batch(rendered, renderer), seen, error


def _join_keyed(
    path: str, numbers: Sequence[int], lines: list[str], keyed_by: tuple[list, list]
) -> tuple[str, JoinedBatch, dict, tuple | None]:
    """The joined rows of a batch whose keys and hashes are known: its lines are parsed only
    for the columns the output keeps."""
    assert _joiner is not None
    keys, hashes = keyed_by
    data: list[dict] = []
    error = None
    if not _joiner.columns:
        data = [{}] * len(lines)
    elif (parsed := jsonl_batch(lines)) is not None:
        data = parsed
    else:
        try:
            data.extend(jsonl_record(line, path, n).data for n, line in zip(numbers, lines, strict=True))
        except SourceError as exc:
            error = (exc.message, exc.uri, exc.line)
    return path, _joiner.batch(zip(keys, hashes, data, strict=False)), {}, error
