"""Rendering on several cores: a large local JSONL source is cut into batches of lines, which
worker processes parse and render while this process indexes and shards what comes back.

Batches come back in the order they went out, so request hashes, shard ids and the order of
everything downstream are those of a serial render (tests hold the two byte for byte). Each
worker builds its own Renderer from the pipeline, so templates keep their sandbox and strict
undefined; an error in a worker comes back as data and is raised here, at its place in the
order, with the serial path's message.
"""

from __future__ import annotations

import collections
import io
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from .errors import SourceError
from .requests import FileRef, Rendered, Renderer
from .sources import Record, infer_format, jsonl_record
from .spec import LoadedPipeline

# Below this much source, starting workers costs more than it saves.
MIN_BYTES = 32 * 1024 * 1024
BATCH_LINES = 2_000


def render_source(
    pipeline: LoadedPipeline,
    renderer: Renderer,
    records: Iterator[Record],
    keep: tuple[str, ...] | None = None,
) -> Iterator[Rendered]:
    """`renderer.render(records)`, on several processes when the source is worth it. The
    Rendered records of the parallel path carry their place (uri, line) and, of their data,
    only the fields in `keep`. With `keep` (the output join) they carry no request line: the
    join needs keys, hashes and kept columns only, and lines are most of what would cross
    between processes."""
    files = _parallel_files(pipeline)
    workers = min((os.cpu_count() or 1) - 1, 8)
    if files is None or workers < 1:
        return renderer.render(records)
    return _render_parallel(pipeline, renderer, files, workers, keep)


def _min_bytes() -> int:
    return int(os.environ.get("BATCHFLOW_PARALLEL_MIN_BYTES", MIN_BYTES))


def _parallel_files(pipeline: LoadedPipeline) -> list[str] | None:
    """The source's files, when all of them are local, uncompressed JSONL, and big enough."""
    import fsspec

    source = pipeline.spec.source
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


def _batches(paths: list[str]) -> Iterator[tuple[str, int, list[tuple[int, str]]]]:
    """(file, position of its first record, [(line number, line)]), lines split as the serial
    reader splits them; blank lines are skipped there and here alike."""
    position = 0
    for path in paths:
        with open(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            batch: list[tuple[int, str]] = []
            try:
                for n, line in enumerate(text, 1):
                    if not line.strip():
                        continue
                    batch.append((n, line))
                    if len(batch) >= BATCH_LINES:
                        yield path, position, batch
                        position += len(batch)
                        batch = []
            except UnicodeDecodeError as exc:
                if batch:
                    yield path, position, batch
                raise SourceError(f"not UTF-8 text: {exc.reason}", uri=path) from None
            if batch:
                yield path, position, batch
                position += len(batch)


def _render_parallel(
    pipeline: LoadedPipeline,
    renderer: Renderer,
    paths: list[str],
    workers: int,
    keep: tuple[str, ...] | None,
) -> Iterator[Rendered]:
    # spawn: the workers share nothing with this process's threads (gcsfs, SQLite).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start, initargs=(pipeline,)) as pool:
        pending: collections.deque[Future] = collections.deque()
        unreadable = None
        try:
            try:
                for batch in _batches(paths):
                    pending.append(pool.submit(_render_batch, *batch, keep))
                    if len(pending) >= 2 * workers + 2:  # bounded: memory does not grow with the source
                        yield from _collect(pending.popleft().result(), renderer)
            except SourceError as exc:  # raised after the records read before it, as serially
                unreadable = exc
            while pending:
                yield from _collect(pending.popleft().result(), renderer)
            if unreadable is not None:
                raise unreadable
        finally:
            for future in pending:
                future.cancel()


def _collect(answer: tuple[str, list[tuple], dict[str, FileRef], tuple | None], renderer: Renderer):
    path, rendered, seen, error = answer
    renderer.files.seen.update(seen)
    for key, digest, line, n, data in rendered:
        yield Rendered(key=key, hash=digest, line=line, record=Record(path, n, data))
    if error is not None:
        message, uri, line = error
        raise SourceError(message, uri=uri, line=line)


# ---------------------------------------------------------------- in the workers

_renderer: Renderer | None = None


def _start(pipeline: LoadedPipeline) -> None:
    global _renderer
    _renderer = Renderer(pipeline)


def _render_batch(
    path: str, position: int, lines: list[tuple[int, str]], keep: tuple[str, ...] | None
) -> tuple[str, list[tuple[str, str, str, int, dict]], dict[str, FileRef], tuple | None]:
    """Parse and render a batch as the serial path does (sources._jsonl, Renderer.render): the
    rendered records up to the first error, the files they named, and that error."""
    renderer = _renderer
    assert renderer is not None
    before = set(renderer.files.seen)
    out: list[tuple[str, str, str, int, dict]] = []
    error = None
    try:
        records = (jsonl_record(line, path, n) for n, line in lines)
        for r in renderer.render(records, start=position):
            if keep is None:
                out.append((r.key, r.hash, r.line, r.record.line, {}))
            else:
                out.append((r.key, r.hash, "", r.record.line, {c: r.record.data.get(c) for c in keep}))
    except SourceError as exc:
        error = (exc.message, exc.uri, exc.line)
    seen = {d: ref for d, ref in renderer.files.seen.items() if d not in before}
    return path, out, seen, error
