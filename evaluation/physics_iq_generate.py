"""Generate the Physics-IQ test videos with a vidmill checkpoint: I2V from the switch frame, V2V from the 3 s clip.

The driver is written against one small callable,
`GenerateFn(checkpoint, condition, mode, seconds, fps, out_path)`: `condition` is the path of the conditioning
image (mode "i2v") or prefix video ("v2v"); it must write the `seconds` that FOLLOW the conditioning, at `fps`,
to `out_path`. `vidmill_generator()` binds it to `vidmill generate` (training/generate.py:
`load_run`, `GenerateRequest`, `generate(models, request, out, on_frames=...)`): it asks for the prefix's frames
plus `seconds`, drops the frames that reconstruct the prefix (its latent frames: `patch_t` frames for an image,
`n // patch_t * patch_t` for a video, as `encode_prefix` aligns them) and writes the rest. Without
training/generate.py it raises `GenerationUnavailable` and the CLI reports the generating mode as not available.

Outputs are named `{id}_{view}_{scenario}` (upstream's renamed form), ready for `evaluate_physics_iq`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidmill.evaluation.physics_iq import SECONDS
from vidmill.evaluation.physics_iq_layout import conditioning_video, read_real, switch_frame
from vidmill.evaluation.video_io import read_video, write_video

GenerateFn = Callable[[str, Path, str, float, float, Path], None]


class GenerationUnavailable(RuntimeError):
    """`vidmill generate` (training/generate.py) is not part of this build."""


def checkpoint_run(checkpoint: str) -> tuple[Path, int | None]:
    """`RUN` (newest complete step) or `RUN/checkpoints/step-N` -> (RUN, N or None)."""
    path = Path(checkpoint)
    if path.name.startswith("step-") and path.parent.name == "checkpoints":
        return path.parent.parent, int(path.name.split("-", 1)[1])
    return path, None


def check_checkpoint(checkpoint: str) -> None:
    """Raise FileNotFoundError unless `checkpoint` names a run with a complete checkpoint (the one asked for)."""
    run, step = checkpoint_run(checkpoint)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"not a training run (no config.yaml): {run}")
    pattern = f"step-{step}/COMPLETE" if step is not None else "step-*/COMPLETE"
    if not any((run / "checkpoints").glob(pattern)):
        raise FileNotFoundError(f"no complete checkpoint {pattern.split('/')[0]} under {run / 'checkpoints'}")


def vidmill_generator(device: str = "cpu", prompt: str | None = None, steps: int | None = None) -> GenerateFn:
    """`GenerateFn` over `vidmill generate`; models are loaded once per checkpoint."""
    try:
        from vidmill.training.generate import GenerateRequest, generate, load_run
    except ImportError as exc:
        raise GenerationUnavailable("vidmill generate is not available in this build (training/generate.py)") from exc
    cache: dict = {}

    def run(checkpoint: str, condition: Path, mode: str, seconds: float, fps: float, out: Path) -> None:
        key = checkpoint_run(checkpoint)
        if key not in cache:
            cache[key] = load_run(key[0], step=key[1], device=device)
        models = cache[key]
        if abs(models.size.fps - fps) > 1e-6:
            raise ValueError(f"the model generates at {models.size.fps} fps, the benchmark run needs {fps}")
        pt = models.size.vae.patch[0]
        prefix = pt if mode == "i2v" else len(read_video(condition).frames) // pt * pt
        keep = round(seconds * fps)
        kept: list[np.ndarray] = []

        def on_frames(frames: np.ndarray, first: int) -> None:
            kept.extend(f for i, f in enumerate(frames) if first + i >= prefix)

        request = GenerateRequest(prompt=prompt, seconds=(prefix + keep) / fps, steps=steps,
                                  image=condition if mode == "i2v" else None,
                                  video=condition if mode == "v2v" else None)
        generate(models, request, None, on_frames=on_frames)
        if len(kept) < keep:
            raise ValueError(f"vidmill generate returned {len(kept)} new frames, {keep} needed")
        write_video(out, np.stack(kept[:keep])[..., ::-1], fps)

    return run


def default_generator() -> GenerateFn:
    return vidmill_generator()


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
                condition = switch_frame(real, vf.take1_id)
            else:
                condition = conditioning_video(real, vf.take1, fps)
                if not condition.exists():
                    raise FileNotFoundError(f"no conditioning clip {condition}")
            generate(checkpoint, condition, mode, float(SECONDS), float(fps), out)
            written = read_video(out)
            if abs(written.duration_s - SECONDS) > 1e-3:
                raise ValueError(f"generator wrote {written.duration_s:.3f} s, not {SECONDS} s")
            row["status"] = "ok"
        except (ValueError, FileNotFoundError) as exc:
            row.update(status="error", error=str(exc))
        rows.append(row)
    return rows
