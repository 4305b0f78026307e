"""A backend whose side effects wait for the lease: each call that makes, changes or removes
something on the service is preceded by a fenced confirmation of the pipeline's lock.

A runner paused past its lease (SIGSTOP, a suspended VM, a long GC pause) may have been
taken over while it slept; the new holder has created the job by then. Without this, the
old holder would wake up and create a second one, which runs and is paid for.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from .base import Backend

# Calls that cost money, lose work or change what another runner sees.
SIDE_EFFECTS = frozenset(
    {
        "upload",
        "upload_file",
        "create",
        "create_inline",
        "create_cache",
        "keep_cache",
        "cancel",
        "delete_job",
        "delete_file",
        "delete_cache",
    }
)

# A test hook: the process stops itself (SIGSTOP, as a debugger or a suspended VM would) right
# before confirming the lease for this call, so a test can take the lease over meanwhile.
_STALL = os.environ.get("BATCHFLOW_TEST_STALL_BEFORE")


def fence(backend: Backend, confirm: Callable[[], None]) -> Backend:
    """`backend`, each of its side effects preceded by `confirm`."""
    return cast("Backend", Fenced(backend, confirm))


class Fenced:
    """Stands for `backend`; `confirm` raises when the lease is no longer this runner's."""

    def __init__(self, backend: Backend, confirm: Callable[[], None]) -> None:
        self._backend, self._confirm = backend, confirm

    def __getattr__(self, name: str):
        attr = getattr(self._backend, name)
        if name not in SIDE_EFFECTS:
            return attr

        def fenced(*args, **kwargs):
            if _STALL == name:
                os.kill(os.getpid(), signal.SIGSTOP)
            self._confirm()
            return attr(*args, **kwargs)

        return fenced
