"""Oracle world scores against ground truth: held-out image metrics at the render cameras, mesh geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hifa.cameras import Cameras
from hifa.evaluate.geometry import compare_points, sample_mesh_surface
from hifa.evaluate.image import masked_abs_error, psnr, ssim
from hifa.errors import HifaError

DEFINITIONS = {
    "psnr": "PSNR (dB) of the 8-bit RGB renders against ground-truth albedo on white, over all views, pixels and channels",
    "ssim": "mean SSIM (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03; valid windows) over views and channels",
    "depth_mae": "mean |sum_k w_k z_k - ground-truth planar depth| over ground-truth foreground pixels (the formula of train_summary's heldout_depth_mae, at the render cameras)",
    "mask_iou": "IoU of {O > 0.5} and the ground-truth mask over all views",
    "chamfer": "(mean_p d(p, truth) + mean_t d(t, mesh)) / 2 over surface samples of mesh.ply and of the scene's outer surface",
    "chamfer_fraction_of_extent": "chamfer / extent (scale-free)",
    "fscore": "harmonic mean of the fractions of mesh and truth samples within tau of the other surface",
    "mesh_psnr": "PSNR (dB) of the exported textured mesh (mesh/textured.glb: its texture, unlit, on white), ray-cast at the render cameras and rounded to 8 bits, against ground-truth albedo on white",
    "precision": "fraction of mesh surface samples within tau of the ground-truth surface",
    "recall": "fraction of ground-truth surface samples within tau of the mesh",
    "tau": "F-score distance: fscore_fraction * extent (extent = bounding-box diagonal of the ground-truth scene)",
}


def image_metrics(rgb: torch.Tensor, depth: torch.Tensor, opacity: torch.Tensor, truth) -> dict[str, float]:
    """PSNR, SSIM, depth MAE and mask IoU of renders (V, H, W, 3) / (V, H, W) against a GroundTruth."""
    fg, true_fg = opacity > 0.5, truth.mask > 0.5
    union = float((fg | true_fg).sum())
    return {
        "psnr": psnr(rgb, truth.rgb),
        "ssim": ssim(rgb, truth.rgb),
        "depth_mae": masked_abs_error(depth, truth.depth, truth.mask),
        "mask_iou": float((fg & true_fg).sum()) / union if union else float("nan"),
    }


def mesh_metrics(mesh_path: Path, scene, points: int, fscore_fraction: float, seed: int = 0) -> dict[str, float]:
    """Chamfer, F-score, precision and recall of a mesh file against the scene's outer surface."""
    import trimesh

    try:
        loaded = trimesh.load(mesh_path, force="mesh", process=False)
    except Exception as exc:
        raise HifaError(f"cannot read mesh {mesh_path}: {exc.__class__.__name__}; run `hifa mesh` again") from None
    if len(loaded.faces) == 0:
        raise HifaError(f"mesh {mesh_path} has no faces; run `hifa mesh` again")
    extent = scene.extent()
    geo = compare_points(
        sample_mesh_surface(np.asarray(loaded.vertices), np.asarray(loaded.faces), points, seed=seed),
        scene.surface_points(points, seed=seed),
        fscore_fraction * extent,
    )
    return {
        "chamfer": geo.chamfer,
        "chamfer_fraction_of_extent": geo.chamfer / extent,
        "fscore": geo.fscore,
        "precision": geo.precision,
        "recall": geo.recall,
        "tau": geo.tau,
        "extent": extent,
    }


def groundtruth_metrics(
    prompt: str, cameras: Cameras, rgb: torch.Tensor, depth: torch.Tensor, opacity: torch.Tensor,
    mesh_path: Path, points: int = 100_000, fscore_fraction: float = 0.01, mesh_views: np.ndarray | None = None,
) -> dict:
    """Every oracle-world score of one run: image metrics at the render cameras, mesh geometry and appearance."""
    from hifa.guidance.oracle import scene_for_prompt
    from hifa.scenes import GroundTruthRenderer

    scene = scene_for_prompt(prompt)
    height, width = rgb.shape[1:3]
    truth = GroundTruthRenderer(scene).render(cameras, height, width, background=1.0)
    return {
        "scene": scene.name,
        **image_metrics(rgb, depth, opacity, truth),
        **mesh_metrics(mesh_path, scene, points, fscore_fraction),
        **({"mesh_psnr": psnr(torch.from_numpy(mesh_views).float() / 255.0, truth.rgb)} if mesh_views is not None else {}),
        "fscore_fraction": fscore_fraction,
        "surface_points": points,
        "definitions": DEFINITIONS,
    }
