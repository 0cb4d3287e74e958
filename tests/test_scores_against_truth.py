"""Chamfer/F-score against brute force, PSNR and masked error edge cases, oracle-world scores."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

from hifa.evaluate.geometry import compare_points
from hifa.evaluate.image import masked_abs_error, psnr
from hifa.evaluate.truth import image_metrics, mesh_metrics


def brute_force_geometry(pred: np.ndarray, ref: np.ndarray, tau: float) -> dict[str, float]:
    """Every pairwise distance, then the metrics straight from their definitions."""
    dist = np.linalg.norm(pred[:, None, :] - ref[None, :, :], axis=-1)
    d_pred, d_ref = dist.min(1), dist.min(0)
    precision, recall = float(np.mean(d_pred < tau)), float(np.mean(d_ref < tau))
    return {
        "chamfer": (d_pred.mean() + d_ref.mean()) / 2,
        "precision": precision,
        "recall": recall,
        "fscore": 2 * precision * recall / (precision + recall),
    }


def test_compare_points_matches_brute_force_on_unequal_sets():
    """Chamfer, precision, recall and F-score equal a brute-force computation when the two directions differ."""
    rng = np.random.default_rng(7)
    ref = rng.uniform(-1, 1, (300, 3))
    pred = np.concatenate([ref[ref[:, 0] < 0][:120] + rng.normal(0, 0.02, (120, 3)), rng.uniform(1.5, 2.0, (40, 3))])
    tau = 0.2
    expected = brute_force_geometry(pred, ref, tau)
    assert abs(expected["precision"] - expected["recall"]) > 0.1  # the two directions really differ
    got = compare_points(pred, ref, tau)
    assert got.chamfer == pytest.approx(expected["chamfer"], rel=1e-12)
    assert (got.precision, got.recall) == (expected["precision"], expected["recall"])
    assert got.fscore == pytest.approx(expected["fscore"], rel=1e-12)
    assert got.tau == tau


def test_chamfer_of_a_subset_is_half_the_reverse_mean_distance():
    """A prediction that is a subset of the reference: d(p, R) = 0, so Chamfer = mean_r d(r, P) / 2."""
    ref = np.array([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [3.0, 4.0, 0]])
    pred = ref[:2]
    m = compare_points(pred, ref, tau=0.5)
    # reverse distances: 0, 0, 2, sqrt(4 + 16) -> mean (2 + sqrt(20)) / 4; forward all 0
    assert m.chamfer == pytest.approx((2 + math.sqrt(20)) / 4 / 2)
    assert (m.precision, m.recall) == (1.0, 0.5)
    assert m.fscore == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # harmonic mean 2/3, not the arithmetic 3/4


def test_psnr_uses_the_square_of_max_value():
    """PSNR = 10 log10(MAX^2 / MSE): 8-bit images with a constant error of 10 give 20 log10(25.5)."""
    a = torch.zeros(2, 4, 4, 3)
    assert psnr(a + 10.0, a, max_value=255.0) == pytest.approx(20 * math.log10(25.5), rel=1e-6)


def test_masked_error_excludes_a_mask_of_exactly_one_half():
    """The mask selects pixels with mask > 0.5: a pixel at exactly 0.5 is out."""
    pred, target = torch.tensor([1.0, 5.0, 7.0]), torch.tensor([2.0, 9.0, 7.5])
    assert masked_abs_error(pred, target, torch.tensor([1.0, 0.5, 0.51])) == pytest.approx((1.0 + 0.5) / 2)


def test_image_metrics_mask_iou_and_depth_error_on_the_truth_mask():
    """Mask IoU = |O > 0.5 and truth| / |O > 0.5 or truth|; depth MAE is taken over the ground-truth foreground only."""
    h = w = 12
    true_mask = torch.zeros(1, h, w)
    true_mask[0, 2:6, 2:6] = 1.0  # 16 pixels
    opacity = torch.zeros(1, h, w)
    opacity[0, 4:8, 2:6] = 0.9  # 16 pixels, 8 of them shared
    opacity[0, 0, 0] = 0.5  # exactly one half: not foreground
    true_depth = torch.where(true_mask > 0.5, torch.tensor(2.0), torch.tensor(0.0))
    depth = true_depth.clone()
    depth[0, 2:4, 2:6] += 0.3  # 8 truth pixels off by 0.3
    depth[0, 6:8, 2:6] = 5.0  # big errors off the truth mask must not count
    rgb = torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(0))
    truth = SimpleNamespace(rgb=rgb, depth=true_depth, mask=true_mask)
    result = image_metrics(rgb, depth, opacity, truth)
    assert result["mask_iou"] == pytest.approx(8 / 24)
    assert result["depth_mae"] == pytest.approx(8 * 0.3 / 16, rel=1e-6)
    assert math.isinf(result["psnr"]) and result["ssim"] == pytest.approx(1.0)


class BoxScene:
    """A stand-in scene: the surface of an axis-aligned box, extent = its diagonal."""

    def __init__(self, size: float):
        self.box = trimesh.creation.box(extents=(size, size, size))

    def extent(self) -> float:
        return float(np.linalg.norm(self.box.bounds[1] - self.box.bounds[0]))

    def surface_points(self, count: int, seed: int = 0) -> np.ndarray:
        return np.asarray(trimesh.sample.sample_surface(self.box, count, seed=seed)[0])


def test_mesh_metrics_scale_by_the_scene_extent(tmp_path: Path):
    """chamfer_fraction_of_extent = chamfer / extent and tau = fscore_fraction * extent, extent the box diagonal."""
    scene = BoxScene(2.0)
    mesh = trimesh.creation.box(extents=(2.2, 2.2, 2.2))  # each face 0.1 outside the truth's
    path = tmp_path / "mesh.ply"
    mesh.export(path)
    result = mesh_metrics(path, scene, 4000, 0.05)
    extent = 2.0 * math.sqrt(3)
    assert result["extent"] == pytest.approx(extent)
    assert result["tau"] == pytest.approx(0.05 * extent)
    assert 0.09 < result["chamfer"] < 0.12
    assert result["chamfer_fraction_of_extent"] == pytest.approx(result["chamfer"] / extent)


def test_groundtruth_mesh_psnr_reads_8_bit_views_as_value_over_255(tmp_path: Path):
    """Mesh views equal to the 8-bit truth render score the PSNR of that 8-bit rounding alone."""
    from hifa.cameras import orbit_cameras
    from hifa.evaluate.truth import groundtruth_metrics
    from hifa.guidance.oracle import scene_for_prompt
    from hifa.scenes import GroundTruthRenderer

    cams = orbit_cameras(2)
    truth = GroundTruthRenderer(scene_for_prompt("a green torus")).render(cams, 16, 16, background=1.0)
    views = np.round(truth.rgb.numpy() * 255).astype(np.uint8)
    mse = float(np.mean((views.astype(np.float64) / 255.0 - truth.rgb.numpy().astype(np.float64)) ** 2))
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    path = tmp_path / "mesh.ply"
    sphere.export(path)
    result = groundtruth_metrics("a green torus", cams, truth.rgb, truth.depth, truth.mask, path, points=500, mesh_views=views)
    assert result["mesh_psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=0.01)
    assert result["mask_iou"] == 1.0 and result["depth_mae"] == 0.0


def test_textured_mesh_views_are_on_white():
    """A red textured sphere seen head-on: red in the middle, white (255) background in the corners."""
    from hifa.cameras import orbit_cameras
    from hifa.evaluate.mesh_views import render_textured
    from hifa.texture import TexturedMesh

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    mesh = TexturedMesh(np.asarray(sphere.vertices), np.asarray(sphere.faces), np.full((len(sphere.vertices), 2), 0.5),
                        np.asarray(sphere.vertex_normals), np.tile(np.array([1.0, 0.0, 0.0]), (4, 4, 1)))
    views = render_textured(mesh, orbit_cameras(2), 16, 16)
    assert views.shape == (2, 16, 16, 3) and views.dtype == np.uint8
    assert (views[:, 0, 0] == 255).all() and (views[:, -1, -1] == 255).all()
    assert (views[:, 8, 8] == [255, 0, 0]).all()
