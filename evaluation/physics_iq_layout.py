"""The public Physics-IQ benchmark's directory layout and file names, read as the upstream scripts read them.

Real root (the downloaded `physics-IQ-benchmark/` folder):
  split-videos/testing/{fps}FPS/{id}_testing-videos_{fps}FPS_{view}_{take}_{scenario}.mp4   (5 s test part)
  split-videos/conditioning/{fps}FPS/{id}_conditioning-videos_{fps}FPS_{view}_{take}_{scenario}.mp4   (3 s, V2V)
  switch-frames/{id}_switch-frames_anyFPS_{view}_...{scenario}.jpg                               (I2V)
with view in perspective-left|center|right, take in take-1|take-2 and scenario like `trimmed-lit-candle.mp4`.
When no `{fps}FPS` testing folder exists, the 30FPS one is converted in memory with `change_fps`.
`--real` may also point straight at a folder of `*_testing-videos_*` files.

Generated folder: one mp4 per take-1 file, named `{id}_{view}_{scenario}` (upstream's renamed form) or anything
starting with the take-1 file's 4-digit `{id}_` prefix (the submission form, e.g. `0001_....mp4`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

VIEWS = ("perspective-left", "perspective-center", "perspective-right")
_REAL = re.compile(r"^(\d{4})_testing-videos_(\d+)FPS_(perspective-[a-z]+)_(take-[12])_(.+\.mp4)$")
_ID = re.compile(r"^(\d{4})_")


@dataclass
class ViewFiles:
    view: str
    take1_id: str
    take1: Path | None = None
    take2: Path | None = None
    generated: Path | None = None


@dataclass
class ScenarioFiles:
    scenario: str
    views: dict[str, ViewFiles] = field(default_factory=dict)


@dataclass
class RealSet:
    folder: Path
    fps: int  # the fps the files in `folder` carry (their `{N}FPS` tag)
    scenarios: dict[str, ScenarioFiles]


def testing_folder(real: Path, fps: int) -> tuple[Path, int]:
    """The folder of real testing videos and their fps: `{fps}FPS` if present, else `30FPS` (converted later)."""
    real = Path(real)
    base = real / "split-videos" / "testing"
    if base.is_dir():
        for candidate in (fps, 30):
            if (base / f"{candidate}FPS").is_dir():
                return base / f"{candidate}FPS", candidate
        raise FileNotFoundError(f"neither {fps}FPS nor 30FPS under {base}")
    tags = {int(m.group(2)) for f in real.glob("*.mp4") if (m := _REAL.match(f.name))}
    if not tags:
        raise FileNotFoundError(f"no Physics-IQ testing videos (*_testing-videos_*FPS_*.mp4) in {real}")
    if len(tags) > 1:
        raise ValueError(f"mixed fps tags {sorted(tags)} in {real}")
    return real, tags.pop()


def read_real(real: Path, fps: int) -> RealSet:
    folder, folder_fps = testing_folder(real, fps)
    scenarios: dict[str, ScenarioFiles] = {}
    takes: dict[tuple[str, str], dict[str, tuple[str, Path]]] = {}
    for f in sorted(folder.glob("*.mp4")):
        m = _REAL.match(f.name)
        if not m:
            continue
        file_id, _, view, take, scenario = m.groups()
        takes.setdefault((scenario, view), {})[take] = (file_id, f)
    for (scenario, view), by_take in sorted(takes.items()):
        sc = scenarios.setdefault(scenario, ScenarioFiles(scenario))
        t1, t2 = by_take.get("take-1"), by_take.get("take-2")
        sc.views[view] = ViewFiles(view, t1[0] if t1 else "", t1[1] if t1 else None, t2[1] if t2 else None)
    return RealSet(folder, folder_fps, scenarios)


def attach_generated(real: RealSet, generated: Path) -> list[str]:
    """Fill `generated` paths by take-1 id prefix; returns names of generated files that match no take-1 file."""
    by_id = {vf.take1_id: vf for sc in real.scenarios.values() for vf in sc.views.values() if vf.take1_id}
    unmatched = []
    for f in sorted(Path(generated).glob("*.mp4")):
        m = _ID.match(f.name)
        vf = by_id.get(m.group(1)) if m else None
        if vf is None:
            unmatched.append(f.name)
        else:
            vf.generated = f
    return unmatched


def conditioning_video(real: Path, take1: Path, fps: int) -> Path:
    """The 3 s conditioning clip of a take-1 testing file (V2V input)."""
    name = take1.name.replace("_testing-videos_", "_conditioning-videos_")
    name = re.sub(r"_\d+FPS_", f"_{fps}FPS_", name, count=1)
    return Path(real) / "split-videos" / "conditioning" / f"{fps}FPS" / name


def switch_frame(real: Path, file_id: str) -> Path:
    """The switch frame (last conditioning frame) image of a take-1 id (I2V input)."""
    hits = sorted((Path(real) / "switch-frames").glob(f"{file_id}_switch-frames_*"))
    if not hits:
        raise FileNotFoundError(f"no switch frame for id {file_id} under {Path(real) / 'switch-frames'}")
    return hits[0]
