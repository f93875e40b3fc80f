"""The CUDA paths (skipped without a GPU): flex attention with gradients, bf16 training and its MFU.

CI has no GPU, so these run only where one is lent (README, "GPU checks"). The CPU suite covers the same
code with sdpa and float32; on a GPU the rest of tests/training runs on CUDA too (the trainer picks it).
NCCL / FSDP2 across ranks needs two GPUs (NCCL refuses two ranks on one device), so it is not here.
"""

from __future__ import annotations

import pytest
import torch

from vidmill.model.attention import TokenLayout, block_causal_attention
from vidmill.training.metrics import read_metrics
from vidmill.training.run import run_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (GPU paths are optional)")


def packed_layout(device: str) -> TokenLayout:
    """Two packed samples (5 and 3 chunks of 48 tokens) and 32 padding tokens: 416 tokens."""
    sample = torch.cat([torch.zeros(240), torch.ones(144), torch.full((32,), -1)]).long()
    chunk = torch.cat([torch.arange(240) // 48, torch.arange(144) // 48, torch.zeros(32)]).long()
    return TokenLayout(sample.to(device), chunk.to(device))


@pytest.mark.parametrize("window", [None, 2])
def test_flex_forward_and_backward_equal_sdpa(window):
    torch.manual_seed(0)
    layout = packed_layout("cuda")
    q0 = torch.randn(8, len(layout), 64, device="cuda")
    k0, v0 = (torch.randn(4, len(layout), 64, device="cuda") for _ in range(2))
    results = {}
    for backend in ("sdpa", "flex"):
        q, k, v = (t.clone().requires_grad_(True) for t in (q0, k0, v0))
        out = block_causal_attention(q, k, v, layout, layout, backend, window=window)
        out.square().sum().backward()
        results[backend] = (out.detach(), q.grad, k.grad, v.grad)
    for name, dense, flex in zip(("out", "dq", "dk", "dv"), results["sdpa"], results["flex"], strict=True):
        torch.testing.assert_close(flex, dense, atol=2e-3, rtol=2e-3, msg=lambda m, n=name: f"{n}: {m}")


def test_bf16_training_learns_and_reports_mfu(latents_file, write_config, tmp_path):
    config = write_config(tmp_path / "c.yaml", steps=40, grad_accum=1, warmup_steps=4, checkpoint_every=40,
                          bf16=True)
    run_training(latents_file, config, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run")
    losses = [r["loss"] for r in rows]
    assert len(losses) == 40 and all(v is not None and v == v for v in losses)
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses
    assert rows[-1]["mfu"] is not None and 0 < rows[-1]["mfu"] < 1  # the H100/H200 peak is known


def test_flex_training_follows_sdpa(latents_file, write_config, tmp_path):
    """Same data, seed and float32 weights: the flex run's losses track the dense-mask run's."""
    runs = {}
    for backend in ("sdpa", "flex"):
        config = write_config(tmp_path / f"{backend}.yaml", steps=4, grad_accum=1, checkpoint_every=4, bf16=False,
                              attention=backend, deterministic=False)
        run_training(latents_file, config, tmp_path / backend, progress=False)
        runs[backend] = [r["loss"] for r in read_metrics(tmp_path / backend)]
    assert len(runs["flex"]) == 4
    for a, b in zip(runs["sdpa"], runs["flex"], strict=True):
        assert abs(a - b) <= 1e-3 * abs(a) + 1e-5, runs
