"""The scan order: every record's key and request hash, in the source's order, as the last full
scan of the pipeline's inputs found them.

Rendering the source is most of what a scan and the output join cost. Both need only each
record's key and request hash, which depend on nothing but the inputs (the spec as loaded,
the source files, the files requests name), so they are kept once rendered: in one file named
by the inputs' fingerprint (reconcile.inputs_fingerprints, the output and errors settings left
out: a new output format reuses it), beside the state. While the inputs keep that
fingerprint, a scan after new results checks what is covered from this file, and the join
puts results in order from it, neither rendering again. It is a cache of this machine's:
never uploaded, only written whole (a crash leaves no file a reader would take), and any
scan that renders writes it anew.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import orjson

FOLDER = "order"


def find(folder: Path, inputs: str) -> Path | None:
    """The order file of these inputs, if a full scan of them finished on this machine."""
    path = folder / FOLDER / f"{inputs}.jsonl"
    return path if path.exists() else None


@contextlib.contextmanager
def recording(folder: Path, inputs: str) -> Iterator[Callable[[Sequence[str], Sequence[str]], object]]:
    """Give each chunk's (keys, hashes) to the function this yields; the file appears when the
    block ends without error, replacing the order files of other inputs."""
    path = folder / FOLDER / f"{inputs}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    with open(part, "wb") as f:
        try:
            yield lambda keys, hashes: f.write(orjson.dumps((keys, hashes), option=orjson.OPT_APPEND_NEWLINE))
        except BaseException:
            f.close()
            part.unlink(missing_ok=True)
            raise
    os.replace(part, path)
    for other in path.parent.iterdir():
        if other != path:
            other.unlink(missing_ok=True)  # other inputs' orders, parts a crash left


class StaleOrder(Exception):
    """An order file that does not match its source (changed without its stamp changing), or
    is damaged: its users render instead, or stop and remove it."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: does not match the source")
        self.path = path


def chunks(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    """The (keys, hashes) of each chunk, in the source's order."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:  # replaced by an apply since found (a plan reads without the lock)
        raise StaleOrder(path) from None
    with f:
        for line in f:
            try:
                keys, hashes = orjson.loads(line)
            except ValueError:
                raise StaleOrder(path) from None
            if len(keys) != len(hashes):
                raise StaleOrder(path)
            yield keys, hashes


class Cursor:
    """Reads an order file in runs of any length: the output join's batches of lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._chunks = chunks(path)
        self._keys: list[str] = []
        self._hashes: list[str] = []

    def take(self, n: int) -> tuple[list[str], list[str]]:
        """The next n (keys, hashes); fewer only at the end of the file."""
        self._fill(n)
        keys, hashes = self._keys[:n], self._hashes[:n]
        del self._keys[:n], self._hashes[:n]
        return keys, hashes

    def done(self) -> bool:
        self._fill(1)
        return not self._keys

    def _fill(self, n: int) -> None:
        while len(self._keys) < n and (more := next(self._chunks, None)) is not None:
            self._keys += more[0]
            self._hashes += more[1]
