"""Image and geometry metrics."""

import math

import numpy as np
import pytest
import torch

from hifa.evaluate.geometry import compare_points, sample_mesh_surface
from hifa.evaluate.image import masked_abs_error, psnr


def test_psnr_known_values():
    a = torch.zeros(4, 4, 3)
    assert psnr(a + 0.1, a) == pytest.approx(20.0)
    assert psnr(a + 0.01, a) == pytest.approx(40.0)
    assert math.isinf(psnr(a, a))


def test_masked_error_ignores_the_background():
    pred, target = torch.tensor([1.0, 5.0, 9.0]), torch.tensor([2.0, 5.0, 0.0])
    assert masked_abs_error(pred, target, torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(0.5)
    assert math.isnan(masked_abs_error(pred, target, torch.zeros(3)))


def test_identical_point_sets_score_perfectly():
    pts = np.random.default_rng(0).normal(size=(2000, 3))
    m = compare_points(pts, pts, tau=0.01)
    assert m.chamfer == 0.0 and m.fscore == 1.0


def test_shifted_plane_has_chamfer_equal_to_the_shift():
    rng = np.random.default_rng(1)
    plane = np.c_[rng.uniform(-1, 1, (20000, 2)), np.zeros(20000)]
    shifted = plane + [0, 0, 0.05]
    m = compare_points(shifted, plane, tau=0.01)
    assert m.chamfer == pytest.approx(0.05, abs=0.005)
    assert m.fscore == 0.0
    assert compare_points(shifted, plane, tau=0.1).fscore == 1.0


def test_missing_part_lowers_recall_not_precision():
    rng = np.random.default_rng(2)
    reference = rng.uniform(-1, 1, (20000, 3))
    half = reference[reference[:, 0] < 0]
    m = compare_points(half, reference, tau=0.05)
    assert m.precision == 1.0 and 0.4 < m.recall < 0.6


def test_mesh_surface_samples_lie_on_the_mesh():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    pts = sample_mesh_surface(sphere.vertices, sphere.faces, 5000)
    assert pts.shape == (5000, 3)
    assert np.abs(np.linalg.norm(pts, axis=1) - 0.5).max() < 0.01
