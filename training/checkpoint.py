"""Checkpoints: RUN/checkpoints/step-N/, written atomically, the same format from one process, torchrun or Ray.

step-N/
  {name}.safetensors        model weights (name: dit, or vae for VAE training), plain parameter names
  {name}_ema.safetensors    EMA weights
  vae.safetensors           the VAE the latents came from (DiT runs that trained or loaded one)
  optimizer.pt              full optimizer state keyed by parameter name (any world size, DDP or FSDP2)
  scheduler.pt              LR scheduler state
  trainer_state.json        step, skipped steps, tokens seen, world size, objective state
  rng/rank-R.pt             every rank's RNG states (python, numpy, torch CPU and CUDA)
  loader/rank-R.pt          every rank's loader state
  COMPLETE                  written last

Every file goes into checkpoints/.tmp-step-N/ first; COMPLETE is written and the folder renamed to
step-N only when all ranks have finished. `latest_checkpoint` only picks folders holding COMPLETE, so a
checkpoint cut off half-way is never resumed from. RUN must be on storage every rank can reach.

`load_models(run_dir, step=None, ema=True)` rebuilds the models for generation (see its docstring).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vidmill.training.parallelize import DistInfo, barrier, clean_name, full_tensor

STEP_DIR = re.compile(r"^step-(\d+)$")
COMPLETE = "COMPLETE"


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def complete_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint, oldest first."""
    root = checkpoint_root(run_dir)
    found = []
    for path in root.iterdir() if root.is_dir() else []:
        match = STEP_DIR.match(path.name)
        if match and (path / COMPLETE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1][1] if found else None


# -- state dicts -------------------------------------------------------------------------------------

def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Plain-named full weights on the CPU (a collective under FSDP2: every rank calls it)."""
    return {clean_name(k): full_tensor(v).detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _is_fsdp(model: torch.nn.Module) -> bool:
    return any(hasattr(p, "device_mesh") for p in model.parameters())


def _param_names(model: torch.nn.Module) -> list[str]:
    return [clean_name(n) for n, _ in model.named_parameters()]


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Optimizer state keyed by parameter name, the format of torch.distributed.checkpoint's full state."""
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    names = _param_names(model)
    sd = optimizer.state_dict()
    state = {names[i]: {k: v.cpu() if torch.is_tensor(v) else v for k, v in s.items()}
             for i, s in sd["state"].items()}
    groups = [dict(g, params=[names[i] for i in g["params"]]) for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # strict=False: parameters that never had a gradient (e.g. the step embedding before distillation)
        # have no optimizer state, exactly as in the run that saved it
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    index = {n: i for i, n in enumerate(_param_names(model))}
    device = next(model.parameters()).device
    sd = {"state": {index[n]: {k: v.to(device) if torch.is_tensor(v) and v.dim() else v for k, v in s.items()}
                    for n, s in state["state"].items()},
          "param_groups": [dict(g, params=[index[n] for n in g["params"]]) for g in state["param_groups"]]}
    optimizer.load_state_dict(sd)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- save / load ------------------------------------------------------------------------------------

def save_checkpoint(run_dir: Path, step: int, info: DistInfo, *, name: str, model: torch.nn.Module,
                    ema, optimizer, scheduler, loader, trainer_state: dict[str, Any],
                    extra_weights: dict[str, dict[str, torch.Tensor]] | None = None, keep: int = 0) -> Path:
    """Collective: every rank calls it; rank 0 writes the shared files, each rank its RNG and loader state."""
    root = checkpoint_root(run_dir)
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
        (tmp / "loader").mkdir()
    barrier(info)
    weights = full_model_state(model)
    ema_weights = ema.full_state_dict() if ema is not None else None
    optim = full_optimizer_state(model, optimizer)
    if info.is_main:
        save_file(weights, str(tmp / f"{name}.safetensors"))
        if ema_weights is not None:
            save_file(ema_weights, str(tmp / f"{name}_ema.safetensors"))
        for extra_name, tensors in (extra_weights or {}).items():
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / f"{extra_name}.safetensors"))
        torch.save(optim, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(dict(trainer_state, step=step,
                                                                world_size=info.world_size)))
    torch.save(rng_state(), tmp / "rng" / f"rank-{info.rank}.pt")
    torch.save(loader.state_dict(), tmp / "loader" / f"rank-{info.rank}.pt")
    barrier(info)
    if info.is_main:
        _fsync_dir(tmp)
        (tmp / COMPLETE).write_text(json.dumps({"step": step}))
        if final.exists():  # a re-run of the same step replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        if keep:
            for _, old in complete_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return final


def _fsync_dir(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def load_weights(path: Path, model: torch.nn.Module, strict: bool = True) -> None:
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def load_rank_file(ckpt: Path, kind: str, rank: int) -> Any | None:
    path = ckpt / kind / f"rank-{rank}.pt"
    return torch.load(path, weights_only=False) if path.exists() else None


def trainer_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "trainer_state.json").read_text())


# -- for generation ---------------------------------------------------------------------------------

def load_models(run_dir: str | Path, step: int | None = None, ema: bool = True):
    """Rebuild the trained models of a run: returns (RunConfig, DiT, VideoVAE or None), both in eval mode.

    run_dir: a RUN folder written by `vidmill train` (its config.yaml names the size and settings).
    step: a checkpoint step; None picks the newest complete checkpoint.
    ema: load the EMA weights (dit_ema.safetensors) rather than the raw ones.
    The VAE comes from the checkpoint's vae.safetensors, else from the config's `vae.path`, else None.
    """
    import yaml

    from vidmill.model.dit import DiT
    from vidmill.model.vae import VideoVAE
    from vidmill.training.config import from_dict

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: not a vidmill training run")
    config = from_dict(yaml.safe_load(config_path.read_text()))
    found = dict(complete_checkpoints(run_dir))
    if not found:
        raise FileNotFoundError(f"no complete checkpoint under {checkpoint_root(run_dir)}")
    if step is not None and step not in found:
        raise FileNotFoundError(f"no complete checkpoint for step {step}; have {sorted(found)}")
    ckpt = found[step if step is not None else max(found)]
    dit = DiT(config.size.dit)
    weights = ckpt / ("dit_ema.safetensors" if ema else "dit.safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    load_weights(weights, dit)
    vae = None
    vae_path = ckpt / "vae.safetensors"
    if not vae_path.is_file() and config.vae.path:
        vae_path = Path(config.vae.path)
    if vae_path.is_file():
        vae = VideoVAE(config.size.vae)
        load_weights(vae_path, vae)
        vae.eval()
    return config, dit.eval(), vae
