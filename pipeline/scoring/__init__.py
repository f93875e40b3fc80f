"""Clip scorers, one file each; importing this package registers the built-ins.

The order of these imports is the registration order: the order scorers run, give their reasons in
reject_reasons, and appear in run.json (their manifest columns follow each one's `manifest_order`).
"""
# ruff: noqa: I001

from vidmill.pipeline.scoring.registry import register, registered, unregister
from vidmill.pipeline.scoring import quality  # noqa: F401
from vidmill.pipeline.scoring import hashes  # noqa: F401
from vidmill.pipeline.scoring import motion  # noqa: F401
from vidmill.pipeline.scoring import ocr  # noqa: F401
from vidmill.pipeline.scoring import aesthetic  # noqa: F401

__all__ = ["register", "registered", "unregister"]
