"""Parallelism applied from outside the model (torchtitan style): the model file never changes.

`parallelize(model, config, dist)` applies, in this order: activation checkpointing per DiT block,
torch.compile per block, then data parallelism: DDP, or FSDP2 (`fully_shard` per block, then the root).
Works on CPU (gloo) and CUDA (nccl); launched by torchrun or by Ray Train, which both set up the
process group (`init_distributed` only joins one when the environment names one).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

WRAPPER_SEGMENTS = {"module", "_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module"}


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group torchrun or Ray Train describes; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return DistInfo(rank, world, local, device)


def clean_name(name: str) -> str:
    """A parameter name without the wrappers' prefixes: checkpoints hold the plain model's names."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_SEGMENTS)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor shard (a collective), or the tensor itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def resolve_mode(mode: str, info: DistInfo, parameters: int) -> str:
    if mode != "auto":
        return mode if info.world_size > 1 or mode == "none" else "none"
    if info.world_size == 1:
        return "none"
    return "fsdp" if parameters > 1_000_000_000 else "ddp"


def parallelize(model: nn.Module, mode: str, info: DistInfo, compile: bool = False,
                activation_checkpointing: bool = False) -> nn.Module:
    blocks = getattr(model, "blocks", None)
    if activation_checkpointing and blocks is not None:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for i, block in enumerate(blocks):
            blocks[i] = checkpoint_wrapper(block)
    if compile and blocks is not None:
        for block in blocks:
            block.compile(dynamic=True)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in blocks if blocks is not None else []:
            fully_shard(block)
        fully_shard(model)
        return model
    if mode != "none":
        raise ValueError(f"unknown parallel mode {mode!r}; choose auto, none, ddp or fsdp")
    return model


@contextlib.contextmanager
def no_grad_sync(model: nn.Module, mode: str, sync: bool):
    """Skip the gradient all-reduce on accumulation micro-batches (all but the last)."""
    if sync or mode == "none":
        yield
    elif mode == "ddp":
        with model.no_sync():
            yield
    else:  # fsdp
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)


def all_reduce_min(value: float, info: DistInfo) -> float:
    if info.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return float(t)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    if info.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()
