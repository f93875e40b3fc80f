"""vidmill's curation pipeline: bucket -> probe -> decode once -> shots -> clips -> shards + manifest."""

__version__ = "0.1.0"
