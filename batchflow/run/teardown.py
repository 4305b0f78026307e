"""cancel and destroy: stop a pipeline's spending, and remove what it made on the service."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..backends.fenced import fence
from ..spec.models import LoadedPipeline
from ..spec.project import Stores
from ..state.store import JOB_ENDED, ShardStatus
from .reconcile import cache_title, display_name, file_title

if TYPE_CHECKING:
    from ..backends.base import Backend

Say = Callable[[str, str], None]


Backends = Callable[[LoadedPipeline], "Backend"]


def cancel(pipelines: list[LoadedPipeline], stores: Stores, backends: Backends, say: Say) -> int:
    """Ask the service to cancel every running job; returns how many. The next apply collects
    what the cancelled jobs finished and sends the rest again."""
    count = 0
    for p in pipelines:
        own = stores.of(p)
        backend = fence(backends(p), functools.partial(own.confirm, p.name))
        with own.lock(p.name):
            state = own.load(p.name)
            for shard in state.shards.values():
                if (
                    shard.job_name
                    and shard.status is ShardStatus.SUBMITTED
                    and shard.job_state not in JOB_ENDED
                ):
                    backend.cancel(shard.job_name)
                    say(p.name, f"cancelled {shard.job_name}")
                    count += 1
    return count


def destroy(pipelines: list[LoadedPipeline], stores: Stores, backends: Backends, say: Say) -> None:
    """Cancel and delete the pipeline's jobs, delete its files and cache on the service, then
    forget its state. Outputs are kept: they are the user's, not the pipeline's. What a killed
    apply made but never named in the state is found as apply finds it: by its display name."""
    for p in pipelines:
        own = stores.of(p)
        backend = fence(backends(p), functools.partial(own.confirm, p.name))
        with own.lock(p.name):
            state = own.load(p.name)
            files: list[str] = []
            unnamed: list[str] = []  # display names of uploads the state may not know of
            for shard in state.shards.values():
                job_name, result_file = shard.job_name, shard.result_file
                if job_name is None and shard.status is ShardStatus.CREATING:
                    if found := backend.find(display_name(p.name, shard, state.lineage)):
                        job_name, result_file = found.name, found.result_file
                if job_name:
                    if shard.job_state not in JOB_ENDED:
                        backend.cancel(job_name)
                    backend.delete_job(job_name)
                    say(p.name, f"deleted job {job_name}")
                files += [name for name in (shard.file_name, result_file) if name]
                if shard.file_name is None and not shard.inline:
                    unnamed.append(display_name(p.name, shard, state.lineage))
            for digest, blob in state.blobs.items():
                if backend.reads_in_place(blob.path):
                    continue  # a file read where it is (gs:// on Vertex) is the user's
                if blob.name:
                    files.append(blob.name)
                else:
                    unnamed.append(file_title(p.name, state, digest))
            for name in dict.fromkeys(files + backend.find_files(unnamed)):
                backend.delete_file(name)
                say(p.name, f"deleted file {name}")
            if state.cache is not None:
                cache = state.cache.name or backend.find_cache(cache_title(p.name, state))
                if cache:
                    backend.delete_cache(cache)
                    say(p.name, f"deleted cache {cache}")
        own.forget(p.name)
        say(p.name, "removed its state")
