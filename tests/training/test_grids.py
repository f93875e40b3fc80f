"""MAGI-1's inference time grids, checked against values computed by hand from t = u^2 / (3 - 2 u^2)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from vidmill.training.schedule import time_grid, u_grid, u_steps


def exact_t(u: Fraction) -> float:
    return float(u * u / (3 - 2 * u * u))


@pytest.mark.parametrize("steps", [8, 16, 32, 64])
def test_base_grids_are_the_shifted_squared_linspace(steps):
    grid = time_grid(steps).double()
    expected = torch.tensor([exact_t(Fraction(k, steps)) for k in range(steps + 1)], dtype=torch.float64)
    torch.testing.assert_close(grid, expected, atol=1e-7, rtol=0)
    assert torch.all(grid.diff() > 0) and grid[0] == 0 and grid[-1] == 1


def test_hand_computed_points():
    g64, g32, g16 = time_grid(64), time_grid(32), time_grid(16)
    assert float(g64[1]) == pytest.approx(1 / 12286, rel=1e-6)  # u = 1/64: (1/4096) / (3 - 2/4096)
    assert float(g32[1]) == pytest.approx(1 / 3070, rel=1e-6)
    assert float(g16[1]) == pytest.approx(1 / 766, rel=1e-6)
    for grid, n in ((g64, 64), (g32, 32), (g16, 16)):  # u = 1/4, 1/2, 3/4 -> 1/46, 1/10, 3/10
        assert [float(grid[n * k // 4]) for k in (1, 2, 3)] == pytest.approx([1 / 46, 0.1, 0.3], rel=1e-6)


def test_distilled_12_step_grid_8_16_16():
    u = u_grid(12, "8,16,16")
    expected_u = [0, 2, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16]  # sixteenths: steps 1/8, 1/16, 1/16 per stage
    assert u.tolist() == [k / 16 for k in expected_u]
    hand = [0, 1 / 190, 9 / 750, 1 / 46, 9 / 174, 49 / 670, 1 / 10, 25 / 142, 121 / 526, 3 / 10, 49 / 94,
            225 / 318, 1]
    assert time_grid(12).tolist() == pytest.approx(hand, rel=1e-6, abs=1e-9)
    assert (u_steps(12) * 16).tolist() == pytest.approx([2, 1, 1] * 4)  # MAGI's distill_interval


def test_distilled_12_step_grid_16_16_8():
    assert (u_grid(12, "16,16,8") * 16).tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16]
    assert (u_steps(12, "16,16,8") * 16).tolist() == pytest.approx([1, 1, 2] * 4)


def test_every_grid_splits_into_four_equal_stages():
    # the staggered schedule runs steps / 4 steps per stage, each stage a quarter of u
    for steps in (8, 12, 16, 64):
        u = u_grid(steps)
        assert [float(u[steps * k // 4]) for k in range(5)] == pytest.approx([0, 0.25, 0.5, 0.75, 1])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="shortcut_mode"):
        u_grid(12, "4,4")
    with pytest.raises(ValueError, match="steps"):
        u_grid(0)
