"""Pinhole rays on non-square images (§3.1), the occupancy grid's cell layout and decay, and each LossMath entry's term."""

import math

import pytest
import torch
from torch import nn

from hifa.cameras import camera_rays
from hifa.loss_math import LossMath
from hifa.occupancy import OccupancyConfig, OccupancyGrid


def test_rays_on_a_wide_image_centre_on_w_over_2_and_use_f_from_the_height():
    """§3.1: direction ((px - W/2)/f, -(py - H/2)/f, -1), f = H / (2 tan(fovy/2)); H = 2, W = 4, fovy = 90 => f = 1."""
    _, dirs = camera_rays(torch.eye(4)[None], torch.tensor([90.0]), 2, 4)
    xs = [-1.5, -0.5, 0.5, 1.5]
    expected = [[x, y, -1.0] for y in (0.5, -0.5) for x in xs]
    assert torch.allclose(dirs[0], torch.tensor(expected), atol=1e-6)


def test_rays_on_a_tall_image():
    """H = 4, W = 2, fovy = 60 => f = 4 / (2 tan 30deg) = 2 sqrt(3); x = (px - 1)/f, y = -(py - 2)/f."""
    _, dirs = camera_rays(torch.eye(4, dtype=torch.float64)[None], torch.tensor([60.0], dtype=torch.float64), 4, 2)
    f = 4 / (2 * math.tan(math.radians(30)))
    expected = [[(px - 1.0) / f, -(py - 2.0) / f, -1.0] for py in (0.5, 1.5, 2.5, 3.5) for px in (0.5, 1.5)]
    assert torch.allclose(dirs[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)


class FieldOf(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def density(self, points):
        return self.fn(points)


def test_cell_centres_lie_in_their_own_cells():
    """Flat index layout: cell_index(cell_centres(c)) == c for every cell, and centres are on the (2 bound / res) grid."""
    grid = OccupancyGrid(OccupancyConfig(resolution=6), bound=1.5)
    cells = torch.arange(6**3)
    centres = grid.cell_centres(cells)
    assert torch.equal(grid.cell_index(centres), cells)
    assert centres[1].tolist() == pytest.approx([-1.25, -1.25, -0.75])  # last axis runs fastest
    assert centres[6].tolist() == pytest.approx([-1.25, -0.75, -1.25])
    assert centres[36].tolist() == pytest.approx([-0.75, -1.25, -1.25])


def test_an_asymmetric_field_marks_the_right_cells():
    """A slab dense only at x > 0.5 is occupied there and empty at x < 0.5, whatever y and z."""
    grid = OccupancyGrid(OccupancyConfig(resolution=8, threshold=0.01), bound=1.0)
    grid.update(FieldOf(lambda p: (p[:, 0] > 0.5).float() * 5.0), torch.Generator().manual_seed(0))
    inside = torch.tensor([[0.8, -0.9, 0.1], [0.9, 0.9, -0.9]])
    outside = torch.tensor([[-0.8, 0.0, 0.8], [0.1, 0.8, 0.9], [0.0, 0.9, 0.8]])
    assert grid.occupied_at(inside).all() and not grid.occupied_at(outside).any()
    assert grid.occupancy() == pytest.approx(2 / 8)  # the two cell layers at x in [0.5, 1]


def test_grid_keeps_the_fresh_maximum_undecayed():
    """density <- max(decay * density, fresh): a constant field c gives exactly c, then max(0.95 c, c') on the next update."""
    grid = OccupancyGrid(OccupancyConfig(resolution=4, decay=0.95, threshold=0.01), bound=1.0)
    grid.update(FieldOf(lambda p: torch.full((len(p),), 3.0)))
    assert torch.allclose(grid.density, torch.full((64,), 3.0))
    grid.update(FieldOf(lambda p: torch.full((len(p),), 1.0)))
    assert torch.allclose(grid.density, torch.full((64,), 2.85))
    grid.update(FieldOf(lambda p: torch.full((len(p),), 4.0)))
    assert torch.allclose(grid.density, torch.full((64,), 4.0))


def test_loss_math_entries_compute_their_own_terms():
    """Each LossMath entry is its §5 term: monotonicity (0,1,0,1,0) = 1/6, z-entropy of a uniform ray = O log(L/O), ..."""
    lm = LossMath()
    w = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    assert float(lm.monotonicity(w, torch.ones_like(w))) == pytest.approx(1 / 6)
    length, opacity, k = 0.8, 0.7, 8
    wu = torch.full((1, k), opacity / k, dtype=torch.float64)
    du = torch.full((1, k), length / k, dtype=torch.float64)
    assert float(lm.z_entropy(wu, du)) == pytest.approx(opacity * (math.log(length) - math.log(opacity)), rel=1e-9)
    wz = torch.tensor([[0.3, 0.0, 0.3]], dtype=torch.float64)
    assert float(lm.zvar(wz, torch.tensor([[2.0, 2.5, 3.0]], dtype=torch.float64), wz.sum(-1))) == pytest.approx(0.25)
    assert float(lm.opacity_entropy(torch.tensor([0.5, 0.5]))) == pytest.approx(1.0)
    b = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert float(lm.sample_entropy(torch.tensor([[0.5, 0.25]]))) == pytest.approx((1.0 + b) / 2)
