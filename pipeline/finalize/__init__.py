"""Finalize as distributed stages over the per-input records on storage (issue 18 part B).

    listing parts -> decide (workers) -> LSH keys by bucket partition -> pairs (workers) -> groups (driver)
    -> transcode / caption (kept clips) -> plan (workers) -> shard offsets (driver) -> tables + shards (workers)

The driver holds ids, counters, the duplicate pairs and one shard count per part; every per-clip row is read
and written by workers, part by part (layout.py names the files).
"""

from vidmill.pipeline.finalize.layout import Layout, ListingWriter
from vidmill.pipeline.finalize.run import Finalize

__all__ = ["Finalize", "Layout", "ListingWriter"]
