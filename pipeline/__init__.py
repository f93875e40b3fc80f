"""vidmill's curation pipeline: bucket -> probe -> decode once -> shots -> clips -> shards + manifest."""

from vidmill import __version__

__all__ = ["__version__"]
