"""Otsu's threshold against a brute-force search, component filtering relative to the largest, bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from hifa.errors import HifaError
from hifa.mesh import clean_mesh, occupied_bounds, otsu_threshold


def brute_force_otsu_split(values: np.ndarray, bins: int = 256) -> tuple[int, np.ndarray, np.ndarray]:
    """(best split k, between-class variances, bin edges) of the histogram of log(1 + v), class 0 = bins 0..k, by loops."""
    logs = np.log1p(np.clip(values, 0, None)).ravel()
    hist, edges = np.histogram(logs, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    total = hist.sum()
    between = np.zeros(bins)
    for k in range(bins):
        n0 = hist[: k + 1].sum()
        n1 = total - n0
        if n0 == 0 or n1 == 0:
            continue
        mu0 = (hist[: k + 1] * centres[: k + 1]).sum() / n0
        mu1 = (hist[k + 1 :] * centres[k + 1 :]).sum() / n1
        between[k] = n0 * n1 * (mu0 - mu1) ** 2
    return int(np.argmax(between)), between, edges


def test_otsu_threshold_is_the_upper_edge_of_the_best_split_bin():
    """A continuous bimodal log-density with one best split: the threshold is that split's bin's upper edge."""
    gen = np.random.default_rng(11)
    logs = np.concatenate([gen.normal(0.8, 0.35, 6000), gen.normal(3.0, 0.6, 2500)])
    values = np.expm1(np.clip(logs, 0, None))
    k, between, edges = brute_force_otsu_split(values)
    runner_up = np.sort(between)[-2]
    assert runner_up < between[k] * (1 - 1e-9)  # a unique best split (within the plateau tolerance)
    assert otsu_threshold(values) == pytest.approx(math.expm1(edges[k + 1]), rel=1e-12)


def test_otsu_on_a_two_valued_grid_takes_the_middle_of_the_plateau():
    """Values 0 and 50: every split between the two bins is equally good; the middle one is log(51) / 2."""
    values = np.concatenate([np.zeros(1000), np.full(300, 50.0)])
    assert otsu_threshold(values) == pytest.approx(math.expm1(math.log(51.0) / 2), rel=1e-9)


def test_otsu_weights_the_class_sizes():
    """Heavily unequal populations: between-class variance is n0 n1 (m0 - m1)^2, not the bare mean gap."""
    gen = np.random.default_rng(12)
    logs = np.concatenate([gen.uniform(0.0, 1.0, 20000), gen.uniform(1.0, 4.0, 2000), gen.uniform(4.0, 4.2, 20)])
    values = np.expm1(logs)
    k, _, edges = brute_force_otsu_split(values)
    assert otsu_threshold(values) == pytest.approx(math.expm1(edges[k + 1]), rel=1e-12)


def test_clean_mesh_drops_components_below_a_fraction_of_the_largest():
    """Threshold = fraction * the largest component's faces (not all faces): a 320-face part survives 0.2 * 1280."""
    big = trimesh.creation.icosphere(subdivisions=3, radius=0.5)  # 1280 faces
    medium = trimesh.creation.icosphere(subdivisions=2, radius=0.2)  # 320 faces
    small = trimesh.creation.icosphere(subdivisions=0, radius=0.05)  # 20 faces
    medium.apply_translation((1.0, 0, 0))
    small.apply_translation((-1.0, 0, 0))
    both = trimesh.util.concatenate([big, medium, small])
    vertices, faces = clean_mesh(both.vertices, both.faces, min_component_fraction=0.2, max_faces=100_000)
    assert len(faces) == 1280 + 320
    assert vertices[:, 0].max() > 1.1 and vertices[:, 0].min() > -0.6  # the medium part kept, the small one gone


def test_occupied_bounds_grow_by_the_margin_and_clip_to_the_grid():
    """Bounds of cells above the threshold (strictly), two cells of margin, never beyond [lo, hi]."""
    grid = np.zeros((11, 11, 11), np.float32)
    grid[3:6, 5, 8:10] = 5.0
    grid[7, 7, 7] = 1.0  # exactly at the threshold: not occupied
    lo, hi = np.full(3, -1.0), np.full(3, 1.0)  # step 0.2
    new_lo, new_hi = occupied_bounds(grid, 1.0, lo, hi)
    assert new_lo == pytest.approx([-1.0 + 0.2, -1.0 + 0.6, -1.0 + 1.2])
    assert new_hi == pytest.approx([-1.0 + 1.4, -1.0 + 1.4, 1.0])  # z: 9 + 2 cells = 2.2 clipped to 1.0
    assert occupied_bounds(np.zeros((4, 4, 4)), 1.0, lo, hi) == (lo, hi)


def test_otsu_leaves_out_overflowed_and_nan_densities():
    """An exp that overflowed (+inf, or float32's max once made finite) or a NaN does not stretch Otsu's histogram."""
    from hifa.mesh import SATURATED

    rng = np.random.default_rng(4)
    values = np.concatenate([rng.uniform(0, 0.5, 500), rng.uniform(30, 60, 300)]).astype(np.float32)
    clean = otsu_threshold(values)
    for extra in (np.inf, np.nan, SATURATED):
        assert otsu_threshold(np.concatenate([values, np.full(20, extra, np.float32)])) == clean
    with pytest.raises(HifaError, match="not finite anywhere"):
        otsu_threshold(np.array([np.nan, np.inf]))


def test_non_finite_density_is_meshed_as_empty_or_solid(caplog):
    """density_grid turns NaN into empty space and +inf into solid, with a warning, so a blown-up core still meshes."""
    import torch

    from hifa.mesh import SATURATED, density_grid, marching_cubes

    def ball(points: torch.Tensor) -> torch.Tensor:
        r = points.norm(dim=-1)
        d = torch.where(r < 0.5, torch.full_like(r, 50.0), torch.zeros_like(r))
        d = torch.where(r < 0.2, torch.full_like(r, float("inf")), d)  # overflowed core
        return torch.where(points[:, 0] > 0.9, torch.full_like(r, float("nan")), d)  # a NaN slab outside

    lo, hi = np.full(3, -1.0), np.full(3, 1.0)
    with caplog.at_level("WARNING", logger="hifa.mesh"):
        grid = density_grid(ball, lo, hi, 21)
    assert np.isfinite(grid).all() and grid.max() == SATURATED and grid[-1].max() == 0.0
    assert "density samples were not finite" in caplog.text
    vertices, _ = marching_cubes(grid, otsu_threshold(grid), lo, hi)
    assert np.linalg.norm(vertices, axis=1).mean() == pytest.approx(0.5, abs=0.06)
