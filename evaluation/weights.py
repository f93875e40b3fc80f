"""The one local-weights loader: every learned model in evaluation/ gets its weights through here.

Nothing is downloaded. A key that is unset or points at a missing file yields the reason string that the
dimension reports (`not computed: no weights (...)`), never a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class WeightsMissing(Exception):
    """Raised with the `not computed: ...` reason when a model cannot be built from local files."""


def weight_path(config: dict[str, Any], key: str) -> Path:
    """The configured local path of `vbench.weights.<key>`, or WeightsMissing with the reason."""
    value = config["vbench"]["weights"].get(key)
    if not value:
        raise WeightsMissing(f"not computed: no weights (vbench.weights.{key} is not set)")
    path = Path(value).expanduser()
    if not path.exists():
        raise WeightsMissing(f"not computed: no weights (vbench.weights.{key}: {path} not found)")
    return path


def load_state_dict(path: str | Path) -> dict:
    """A plain state dict from .safetensors or a torch file (weights_only: no code runs on load)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "teacher"):  # common checkpoint wrappers
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    return state


def load_into(model, path: str | Path, drop_prefixes: tuple[str, ...] = ()) -> None:
    """Load `path` into `model` strictly (after dropping keys with `drop_prefixes`); a mismatch is an error."""
    state = {k.removeprefix("module."): v for k, v in load_state_dict(path).items()}
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights {path} do not fit the architecture: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
