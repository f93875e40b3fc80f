"""Generate the Physics-IQ test videos with a vidmill checkpoint: I2V from the switch frame, V2V from the 3 s clip.

The driver is written against one small callable, `GenerateFn(checkpoint, condition, seconds, fps, out_path)`,
where `condition` is an RGB uint8 image (H, W, 3) for I2V or RGB frames (T, H, W, 3) for V2V; it must write a
video of exactly `seconds` at `fps` to `out_path`. `default_generator()` binds it to `vidmill generate`
(training/generate.py) when that module exists; until then it raises `GenerationUnavailable` and the CLI
reports the generating mode as not available.

Outputs are named `{id}_{view}_{scenario}` (upstream's renamed form), ready for `evaluate_physics_iq`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from vidmill.evaluation.physics_iq import SECONDS
from vidmill.evaluation.physics_iq_layout import conditioning_video, read_real, switch_frame
from vidmill.evaluation.video_io import bgr_to_rgb, read_video

GenerateFn = Callable[[str, np.ndarray, float, float, Path], None]


class GenerationUnavailable(RuntimeError):
    """`vidmill generate` (training/generate.py) is not part of this build."""


def default_generator() -> GenerateFn:
    """The project's generator, `vidmill.training.generate.generate(checkpoint, condition, seconds, fps, out_path)`."""
    try:
        from vidmill.training import generate as gen_module  # type: ignore[attr-defined]
    except ImportError as exc:
        raise GenerationUnavailable("vidmill generate is not available in this build (training/generate.py)") from exc
    fn = getattr(gen_module, "generate", None)
    if fn is None:
        raise GenerationUnavailable("training/generate.py has no generate(checkpoint, condition, seconds, fps, out)")
    return fn


def generate_physics_iq(real: str | Path, out_dir: str | Path, checkpoint: str, mode: str, fps: int,
                        generate: GenerateFn | None = None, limit: int | None = None) -> list[dict]:
    """Write one 5 s video per take-1 view; returns one row per item with status ok | error."""
    if mode not in ("i2v", "v2v"):
        raise ValueError(f"mode must be i2v or v2v, not {mode!r}")
    generate = generate or default_generator()
    real = Path(real)
    real_set = read_real(real, fps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = [vf for sc in real_set.scenarios.values() for vf in sc.views.values() if vf.take1 is not None]
    rows = []
    for vf in items[:limit]:
        scenario = vf.take1.name.split("_", 5)[5]
        out = out_dir / f"{vf.take1_id}_{vf.view}_{scenario}"
        row = {"id": vf.take1_id, "view": vf.view, "scenario": scenario, "output": str(out)}
        try:
            if mode == "i2v":
                image = cv2.imread(str(switch_frame(real, vf.take1_id)))
                if image is None:
                    raise ValueError(f"cannot read the switch frame of {vf.take1_id}")
                condition = bgr_to_rgb(image)
            else:
                condition = bgr_to_rgb(read_video(conditioning_video(real, vf.take1, fps)).frames)
            generate(checkpoint, condition, float(SECONDS), float(fps), out)
            written = read_video(out)
            if abs(written.duration_s - SECONDS) > 1e-3:
                raise ValueError(f"generator wrote {written.duration_s:.3f} s, not {SECONDS} s")
            row["status"] = "ok"
        except (ValueError, FileNotFoundError) as exc:
            row.update(status="error", error=str(exc))
        rows.append(row)
    return rows
