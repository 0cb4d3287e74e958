"""Audit: per-ray outputs (clamped image, unnormalised depth) and the sample budget's overflow and per-step counts."""

import pytest
import torch

from hifa import volume
from hifa.sample_budget import SampleBudget


def test_ray_outputs_clamp_the_image_and_keep_depth_unnormalised():
    z = torch.tensor([[2.0, 3.0]])
    weights = torch.tensor([[0.3, 0.5]])
    colour = torch.tensor([[[1.6, -0.4, 0.5], [1.2, -0.2, 0.5]]])  # out-of-range colours, e.g. before a sigmoid
    background = torch.tensor([[0.0, 0.0, 1.0]])
    out = volume.ray_outputs(weights, z, torch.tensor([[1.0, 0.1]]), colour, background)
    # raw composite: (0.48 + 0.6, -0.12 - 0.1, 0.15 + 0.25 + 0.2) = (1.08, -0.22, 0.6)
    assert out["image"][0].tolist() == pytest.approx([1.0, 0.0, 0.6])
    assert float(out["depth"][0]) == pytest.approx(0.3 * 2 + 0.5 * 3)  # sum w z, not divided by O = 0.8
    assert float(out["opacity"][0]) == pytest.approx(0.8)
    assert out["pdf"][0].tolist() == pytest.approx([0.3, 5.0])


def _budget_for(count, total, name="coarse"):
    budget = SampleBudget()
    budget.observe({f"count:{name}:{total}": float(count)})
    return budget


def test_a_step_that_fills_its_capacity_exactly_does_not_overflow():
    budget = _budget_for(700, 5000)  # capacity ceil(700 * 1.2 / 1024) * 1024 = 1024
    capacity = budget.capacity("coarse:5000", 5000)
    assert capacity == 1024
    occupied = torch.zeros(5000, dtype=torch.bool)
    occupied[:capacity] = True  # every slot used, none lost
    index, slots = budget.compact("coarse", occupied)
    assert torch.equal(index, torch.arange(capacity)) and torch.equal(slots, torch.arange(capacity))
    assert not bool(budget.take()["overflow"])
    occupied[capacity] = True  # one more sample than slots: lost, so an overflow
    budget.compact("coarse", occupied)
    assert bool(budget.take()["overflow"])


def test_a_step_s_count_is_the_largest_of_its_chunks_with_one_key():
    budget = _budget_for(700, 5000)
    big, small = torch.zeros(5000, dtype=torch.bool), torch.zeros(5000, dtype=torch.bool)
    big[:900], small[:300] = True, True
    budget.compact("coarse", big)
    budget.compact("coarse", small)  # a later chunk of the same size and pass, fewer samples
    values = budget.take()
    assert int(values["count:coarse:5000"]) == 900 and not bool(values["overflow"])
    budget.observe({k: float(v) for k, v in values.items()})
    assert budget.capacity("coarse:5000", 5000) == 2048  # from max(700, 900) * 1.2 = 1080
