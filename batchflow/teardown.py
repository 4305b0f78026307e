"""cancel and destroy: stop a pipeline's spending, and remove what it made on the service."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from .backends.fenced import Fenced
from .project import Stores
from .spec import LoadedPipeline
from .state import JOB_ENDED, ShardStatus

if TYPE_CHECKING:
    from .backends.gemini import GeminiBackend

Say = Callable[[str, str], None]


Backends = Callable[[LoadedPipeline], "GeminiBackend"]


def cancel(pipelines: list[LoadedPipeline], stores: Stores, backends: Backends, say: Say) -> int:
    """Ask the service to cancel every running job; returns how many. The next apply collects
    what the cancelled jobs finished and sends the rest again."""
    count = 0
    for p in pipelines:
        own = stores.of(p)
        backend = Fenced(backends(p), functools.partial(own.confirm, p.name))
        with own.lock(p.name):
            state = own.load(p.name)
            for shard in state.shards.values():
                if shard.status is ShardStatus.SUBMITTED and shard.job_state not in JOB_ENDED:
                    backend.cancel(shard.job_name)
                    say(p.name, f"cancelled {shard.job_name}")
                    count += 1
    return count


def destroy(pipelines: list[LoadedPipeline], stores: Stores, backends: Backends, say: Say) -> None:
    """Cancel and delete the pipeline's jobs, delete its files and cache on the service, then
    forget its state. Outputs are kept: they are the user's, not the pipeline's."""
    for p in pipelines:
        own = stores.of(p)
        backend = Fenced(backends(p), functools.partial(own.confirm, p.name))
        with own.lock(p.name):
            state = own.load(p.name)
            for shard in state.shards.values():
                if shard.job_name:
                    if shard.job_state not in JOB_ENDED:
                        backend.cancel(shard.job_name)
                    backend.delete_job(shard.job_name)
                    say(p.name, f"deleted job {shard.job_name}")
                for name in (shard.file_name, shard.result_file):
                    if name:
                        backend.delete_file(name)
                        say(p.name, f"deleted file {name}")
            for blob in state.blobs.values():
                # A file read where it is (gs:// on Vertex) is the user's, not a copy of ours.
                if blob.name and not backend.reads_in_place(blob.path):
                    backend.delete_file(blob.name)
                    say(p.name, f"deleted file {blob.name} ({blob.path})")
            if state.cache is not None and state.cache.name:
                backend.delete_cache(state.cache.name)
                say(p.name, f"deleted cache {state.cache.name}")
        own.forget(p.name)
        say(p.name, "removed its state")
