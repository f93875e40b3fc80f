"""Columns of the manifest that depend on the transcoded clip's bytes (imported by tests that compare runs)."""

from __future__ import annotations

# Columns that depend on the transcoded clip's bytes: x264's macroblock-tree rate control makes the bytes
# of a clip depend on what the same encoder process encoded before (measured: the same 84 frames give
# 45,479 bytes fresh and 46,094 after another clip), and the signals captioner reads the clip's colours.
TRANSCODE_DEPENDENT = ("clip_bytes", "caption", "captions_per_second", "caption_tokens_in", "caption_tokens_out",
                       "caption_latency_s")


def without_transcode_dependent(rows: list[dict]) -> list[dict]:
    """Manifest rows without the columns that depend on the encoder's bytes (see TRANSCODE_DEPENDENT)."""
    return [{k: v for k, v in row.items() if k not in TRANSCODE_DEPENDENT} for row in rows]
