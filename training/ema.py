"""Exponential moving average of a model's parameters, kept in float32 beside the (possibly sharded) model.

The shadow tensors have the same type and placement as the parameters (plain tensors, or DTensor shards
under FSDP2), so the update is local and needs no communication; `full_state_dict` gathers them.
"""

from __future__ import annotations

import torch
from torch import nn

from vidmill.training.parallelize import clean_name, full_tensor


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names = [clean_name(n) for n, _ in model.named_parameters()]
        with torch.no_grad():
            self.shadow = [p.detach().clone().float() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Collective under FSDP2: every rank must call it."""
        return {n: full_tensor(t).cpu() for n, t in zip(self.names, self.shadow, strict=True)}

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, shadow in zip(self.names, self.shadow, strict=True):
            value = state[name]
            if hasattr(shadow, "device_mesh"):  # DTensor shard: take this rank's slice of the full tensor
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(value.to(shadow.device), shadow.device_mesh, shadow.placements)
            shadow.copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into a model with the same (unwrapped) parameter names."""
        params = dict((clean_name(n), p) for n, p in model.named_parameters())
        for name, shadow in zip(self.names, self.shadow, strict=True):
            params[name].copy_(shadow)
