"""`validate`'s look at the data: every record of a local source rendered, as apply would.

Reading the fields of the first records (checks.py) misses a field absent from
record 251 or a key used twice. For local sources up to a size limit
(`BATCHFLOW_VALIDATE_MAX_BYTES`) every record is rendered; above it, the first
`PARTIAL_RECORDS`, and `validate` says so. No network: remote sources are left
to `plan`, and files named by URL are not read.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

from ..errors import SourceError
from ..prepare.render import FILE_PLACEHOLDER, Files, Renderer
from ..run.reconcile import duplicate_error, empty_source, input_limit, over_input_limit, records
from .models import LoadedPipeline
from .pricing import estimate_line

PARTIAL_RECORDS = 10_000


@dataclass(frozen=True)
class RecordCheck:
    records: int  # how many were rendered
    complete: bool  # all of the source, or only the first PARTIAL_RECORDS
    skipped: str | None = None  # why the data was not read at all


class _OfflineFiles(Files):
    """Local files are read (to find missing ones); gs:// and s3:// ones are not."""

    def part(self, ref: str) -> dict[str, Any]:
        if "://" in ref:
            return {"fileData": {"fileUri": FILE_PLACEHOLDER + ref, "mimeType": "application/octet-stream"}}
        return super().part(ref)


def check_records(pipeline: LoadedPipeline, max_bytes: int) -> RecordCheck:
    """Render the pipeline's records; raise SourceError for the first that apply would refuse."""
    uri = pipeline.spec.source.uri
    if uri is None:
        upstream = pipeline.spec.source.pipeline
        return RecordCheck(0, False, f"its records are the results of {upstream}: plan reads them")
    if "://" in uri:
        return RecordCheck(0, False, "a remote source is read by plan, not validate")
    size = sum(os.path.getsize(f) for f in glob.glob(pipeline.resolve(uri)) if os.path.isfile(f))
    limit = None if size <= max_bytes else PARTIAL_RECORDS
    renderer = Renderer(pipeline, files=_OfflineFiles(pipeline.path.parent))
    token_limit = input_limit(pipeline, renderer)
    keys: dict[str, tuple[str, int]] = {}
    count = 0
    for r in renderer.render(records(pipeline)):
        if r.key in keys:
            raise duplicate_error(pipeline, r.key, keys[r.key], r.record.uri, r.record.line)
        if token_limit is not None and (tokens := estimate_line(r.line, renderer.files.seen)) > token_limit:
            message = over_input_limit(pipeline, r.key, tokens, token_limit)
            raise SourceError(message, uri=r.record.uri, line=r.record.line)
        keys[r.key] = (r.record.uri, r.record.line)
        count += 1
        if limit is not None and count >= limit:
            return RecordCheck(count, False)
    if count == 0:
        raise empty_source(pipeline)
    return RecordCheck(count, True)
