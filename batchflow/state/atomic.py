"""Local files that appear whole or not at all: write a temporary file, fsync, rename.

The temporary file is named by this host and process (`.<name>.<host>.<pid>.<random>.tmp`),
so that one a killed process left (a kill -9 while an output of gigabytes was written) is
removed by the next writer of the same file on this host, once that process is gone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces `path` only when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{socket.gethostname()}."
    _remove_left(path.parent, prefix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; the file should get what any new file gets
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_left(folder: Path, prefix: str) -> None:
    """Remove the temporary files of processes of this host that are gone (killed mid-write)."""
    for left in folder.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = left.name.removeprefix(prefix).split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                left.unlink()


def process_alive(pid: object) -> bool:
    """Whether a process of this host has that pid (one of another user's counts as alive)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)
