"""From records to requests: sources read through fsspec, the renderer, shards, the parallel
workers that render large sources, and order files (each record's key and hash, in source order)."""
