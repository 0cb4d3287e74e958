"""`hifa depth R`: the training run's depth estimator on the rendered views, and depth consistency."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hifa.config import TrainConfig
from hifa.evaluate.consistency import depth_consistency
from hifa.io import load_image, save_image, write_json_atomic, write_npz_atomic
from hifa.media import colorize, contact_sheet, normalise
from hifa.run_folder import clear_outputs, load_config, read_marker, run_dir, step_dir
from hifa.steps.render import marker_cameras, view_name

SCHEMA = "hifa.depth/1"


def build_step_estimator(config: TrainConfig):
    """The estimator training used (hifa.run_setup.build_estimator) and a description of it."""
    from hifa.run_setup import build_estimator

    if config.prior.kind == "oracle":
        from hifa.guidance.oracle import OraclePrior, scene_for_prompt

        prior = OraclePrior(config.prior.oracle, scenes=[scene_for_prompt(config.prompt)])  # only this scene is needed
        info = {"kind": "oracle", "model": None, "definition": "ground-truth disparity (mask / planar depth, 0 on background) at each render camera"}
        return build_estimator(config, prior), info
    info = {"kind": "dpt", "model": config.depth.model, "definition": "relative disparity predicted from the rendered RGB (8-bit PNG)"}
    return build_estimator(config, None), info


def load_views(folder: Path, files: list[str]) -> torch.Tensor:
    """Rendered PNGs as (V, 3, H, W) floats in [0, 1]."""
    return torch.from_numpy(np.stack([load_image(folder / f) for f in files])).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def run_estimator(estimator, config: TrainConfig, marker: dict, images: torch.Tensor, batch: int, progress: bool) -> np.ndarray:
    """Estimated relative disparity (V, H, W) of the rendered views."""
    size = (int(images.shape[-2]), int(images.shape[-1]))
    if hasattr(estimator, "estimate_at"):  # the oracle knows the truth at the camera itself
        return estimator.estimate_at(config.prompt, marker_cameras(marker), size).cpu().numpy().astype(np.float32)
    # 8-bit PNG input: +0.5/255 keeps the estimator's truncation to uint8 at exactly the stored value.
    images = (images * 255.0 + 0.5) / 255.0
    chunks = []
    for start in tqdm(range(0, len(images), batch), desc="depth", unit="batch", disable=not progress, dynamic_ncols=True):
        chunks.append(estimator.estimate(images[start : start + batch], size=size).float().cpu())
    return torch.cat(chunks).numpy().astype(np.float32)


def disparity_image(disparity: np.ndarray) -> np.ndarray:
    """A relative disparity map as a colour image, normalised over its own non-zero range (near = red)."""
    valid = (disparity != 0).astype(np.float32) if (disparity != 0).any() else np.ones_like(disparity)
    scaled, _ = normalise(disparity, valid)
    return colorize(scaled, valid)


def estimate_depth(run: str | Path, out: str | Path | None = None, batch: int = 8, progress: bool = True) -> dict:
    """Estimate disparity of every rendered view into `out` (default R/depth); depth.json is written last."""
    t0 = time.perf_counter()
    run = run_dir(run)
    config = load_config(run)
    render_folder, marker = read_marker(run, "render")
    with np.load(render_folder / marker["files"]["depth_npz"]) as arrays:
        depth, opacity = arrays["depth"], arrays["opacity"]
    images = load_views(render_folder, marker["files"]["rgb"])
    out = step_dir(run, "depth", out)
    clear_outputs(out, ["estimated/*.png"])
    estimator, info = build_step_estimator(config)
    estimate = run_estimator(estimator, config, marker, images, batch, progress)
    scores = depth_consistency(depth, opacity, estimate)
    count = len(estimate)
    files = [f"estimated/{view_name(i, count)}.png" for i in range(count)]
    for i, name in enumerate(files):
        save_image(disparity_image(estimate[i]), out / name)
    # Sheet: rendered disparity, estimate aligned to it, |difference| on the mask.
    rendered = np.where(opacity > 0.5, opacity / np.maximum(depth, 1e-12), 0.0)
    aligned = np.zeros_like(estimate)
    for i, view in enumerate(scores["per_view"]):
        if view["scale"] is not None:
            aligned[i] = np.where(opacity[i] > 0.5, view["scale"] * estimate[i] + view["shift"], 0.0)
    mask = (opacity > 0.5).astype(np.float32)
    scaled_r, span = normalise(rendered, mask)
    scaled_a, _ = normalise(aligned, mask, span)
    error = np.abs(scaled_a - scaled_r)
    rows = [np.stack([colorize(s, m) for s, m in zip(stack, mask)]) for stack in (scaled_r, scaled_a, error)]
    sheet = contact_sheet([torch.from_numpy(r) for r in rows], labels=["rendered", "estimated", "|difference|"])
    save_image(sheet, out / "comparison.png")
    write_npz_atomic(out / "estimated.npz", disparity=estimate, aligned=aligned)
    result = {
        "schema": SCHEMA,
        "run": str(run),
        "render": str(render_folder),
        "step": marker.get("step"),  # the training step the rendered views (and so these estimates) come from
        "prompt": config.prompt,
        "estimator": info,
        "views": count,
        "resolution": list(estimate.shape[1:]),
        "consistency": scores,
        "files": {
            "estimated": files,
            "estimated_npz": "estimated.npz",
            "comparison": "comparison.png",
        },
        "arrays": {"disparity": "estimated relative disparity (V, H, W)", "aligned": "s y + t on M, 0 elsewhere (V, H, W)"},
        "comparison": "rows: rendered disparity O/depth, estimate aligned to it (same colour scale), |difference|",
        "wall_time_s": time.perf_counter() - t0,
    }
    write_json_atomic(out / "depth.json", result)
    return result
