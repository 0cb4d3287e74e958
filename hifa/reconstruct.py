"""`hifa reconstruct`: fit the field to ground-truth renders (no prior) and score it against truth.

The engine's end-to-end check: hash grid, renderer, sampling and mesh extraction must
together recover a catalogue scene from images alone.
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import asdict, dataclass
from dataclasses import field as default
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hifa.background import BackgroundMLP
from hifa.cameras import Cameras, orbit_cameras, sphere_cameras
from hifa.encoding import HashGridConfig
from hifa.errors import require
from hifa.evaluate.geometry import compare_points, sample_mesh_surface
from hifa.evaluate.image import masked_abs_error, psnr
from hifa.evaluate.mesh_views import render_textured
from hifa.field import FieldConfig, NeRFField
from hifa.io import finite, save_image, write_bytes_atomic, write_json_atomic
from hifa.mesh import MeshConfig, export_mesh, extract_mesh, texture_extracted
from hifa.renderer import RayOptions, Renderer, RendererConfig
from hifa.scenes import GroundTruthRenderer, Scene, get_scene
from hifa.texture import TexturedMesh, export_textured


@dataclass(frozen=True)
class ReconstructConfig:
    """Budget and scale of a reconstruction (defaults fit 2 CPU cores in under 10 minutes)."""

    steps: int = 1500
    time_budget_s: float | None = 420.0
    batch_rays: int = 2048
    train_views: int = 64
    resolution: int = 128
    eval_views: int = 8
    eval_resolution: int = 128
    lr: float = 1e-2
    seed: int = 0
    field: FieldConfig = default(default_factory=lambda: FieldConfig(grid=HashGridConfig(log2_hashmap_size=17, finest_resolution=1024)))
    renderer: RendererConfig = default(default_factory=lambda: RendererConfig(num_coarse=64, num_fine=32))
    mesh: MeshConfig = default(default_factory=lambda: MeshConfig(resolution=256, max_faces=200_000))
    surface_points: int = 100_000
    fscore_fraction: float = 0.01

    def __post_init__(self) -> None:
        require(self.steps >= 1, "steps", f"must be positive, got {self.steps}")
        require(self.time_budget_s is None or self.time_budget_s > 0, "time_budget_s", "must be positive")
        require(self.batch_rays >= 1, "batch_rays", f"must be positive, got {self.batch_rays}")
        require(self.train_views >= 1, "train_views", f"must be positive, got {self.train_views}")
        require(self.resolution >= 8, "resolution", f"must be >= 8, got {self.resolution}")
        require(0 <= self.seed < 2**63, "seed", f"must lie in [0, 2^63), got {self.seed}")
        require(self.eval_views >= 1, "eval_views", f"must be positive, got {self.eval_views}")
        require(self.eval_resolution >= 8, "eval_resolution", f"must be >= 8, got {self.eval_resolution}")
        require(self.lr > 0, "lr", "must be positive")


@dataclass
class RayBank:
    """All training pixels as rays, with their ground-truth colour and mask."""

    origins: torch.Tensor
    directions: torch.Tensor
    rgb: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_views(cls, gt: GroundTruthRenderer, cameras: Cameras, resolution: int) -> RayBank:
        origins, directions = cameras.rays(resolution, resolution)
        truth = gt.cast(origins, directions)
        return cls(origins.reshape(-1, 3), directions.reshape(-1, 3), truth["rgb"].reshape(-1, 3), truth["mask"].reshape(-1))

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.randint(0, self.rgb.shape[0], (count,), generator=generator)
        return self.origins[index], self.directions[index], self.rgb[index], self.mask[index]


def build_renderer(config: ReconstructConfig) -> Renderer:
    """Field, background and renderer for a reconstruction."""
    return Renderer(NeRFField(config.field), BackgroundMLP(), config.renderer)


def fit(renderer: Renderer, bank: RayBank, config: ReconstructConfig, progress: bool = True) -> list[dict]:
    """Photometric fit on random rays over random solid backgrounds; returns the loss history."""
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(renderer.parameters(), lr=config.lr, betas=(0.9, 0.99), eps=1e-15)
    history, start = [], time.perf_counter()
    # Redirected to a log file (a cluster job), refresh rarely instead of ten times a second.
    interval = 0.2 if sys.stderr.isatty() else 30.0
    bar = tqdm(range(1, config.steps + 1), desc="reconstruct", unit="step", disable=not progress, dynamic_ncols=True, mininterval=interval)
    for step in bar:
        origins, directions, rgb, mask = bank.sample(config.batch_rays, generator)
        # A random solid background per ray makes colour alone pin down the opacity.
        background = torch.rand(config.batch_rays, 3, generator=generator)
        target = rgb * mask[:, None] + background * (1 - mask[:, None])
        view_dependent = bool(torch.rand((), generator=generator) < renderer.field.config.view_dependent_rate)
        options = RayOptions(training=True, background=background, view_dependent=view_dependent, generator=generator)
        out = renderer(origins, directions, options)
        loss = torch.mean((out["image"] - target) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        loss_value = float(loss.detach())
        history.append({"step": step, "loss": loss_value, "psnr": float(-10 * np.log10(max(loss_value, 1e-10))), "time_s": elapsed})
        bar.set_postfix(loss=f"{loss_value:.4f}", psnr=f"{history[-1]['psnr']:.1f}")
        if config.time_budget_s is not None:
            if elapsed > config.time_budget_s:
                bar.write(f"time budget of {config.time_budget_s:.0f} s reached after {step} steps")
                break
            # Keep the bar's total (and so its ETA) at the steps the time budget allows.
            bar.total = max(step, min(config.steps, int(config.time_budget_s * step / elapsed)))
    bar.close()
    return history


def evaluate_views(renderer: Renderer, gt: GroundTruthRenderer, cameras: Cameras, resolution: int) -> tuple[dict, dict]:
    """Held-out PSNR and depth error on a white background; returns metrics and the renders."""
    truth = gt.render(cameras, resolution, resolution, background=1.0)
    renders = renderer.render_views(cameras, resolution, resolution, RayOptions(background=torch.ones(3)))
    metrics = {
        "psnr": psnr(renders["image"], truth.rgb),
        "psnr_per_view": [psnr(p, t) for p, t in zip(renders["image"], truth.rgb)],
        "depth_mae": masked_abs_error(renders["depth"], truth.depth, truth.mask),
        "mask_iou": float(((renders["opacity"] > 0.5) & (truth.mask > 0.5)).sum() / ((renders["opacity"] > 0.5) | (truth.mask > 0.5)).sum()),
    }
    return metrics, {"truth": truth, "renders": renders}


def reconstruct(scene: Scene | str, config: ReconstructConfig, out_dir: Path | None = None, progress: bool = True) -> dict:
    """Fit, evaluate views and mesh, and (if out_dir) write metrics, images, mesh and weights."""
    t0 = time.perf_counter()
    scene = get_scene(scene) if isinstance(scene, str) else scene
    torch.manual_seed(config.seed)
    gt = GroundTruthRenderer(scene)
    bank = RayBank.from_views(gt, sphere_cameras(config.train_views), config.resolution)
    renderer = build_renderer(config)
    history = fit(renderer, bank, config, progress)
    renderer.eval()
    # Held-out: the evaluation orbit of method.md §6.5, offset so no view repeats a training one.
    eval_cams = orbit_cameras(config.eval_views, start_azimuth_deg=180.0 / config.eval_views)
    view_metrics, images = evaluate_views(renderer, gt, eval_cams, config.eval_resolution)
    mesh = extract_mesh(renderer.field, config.mesh)
    textured = texture_extracted(renderer.field, mesh, config.mesh)
    # The asset as exported, against the held-out truth: what meshing and texturing lose from the field's renders.
    mesh_render = torch.from_numpy(render_textured(textured, eval_cams, config.eval_resolution, config.eval_resolution)).float() / 255.0
    extent = scene.extent()
    tau = config.fscore_fraction * extent
    geo = compare_points(
        sample_mesh_surface(mesh.vertices, mesh.faces, config.surface_points, seed=config.seed),
        scene.surface_points(config.surface_points, seed=config.seed),
        tau,
    )
    metrics = {
        "scene": scene.name,
        "prompt": scene.prompt,
        "steps": len(history),
        "train_loss": history[-1]["loss"],
        **view_metrics,
        "chamfer": geo.chamfer,
        "chamfer_fraction_of_extent": geo.chamfer / extent,
        "fscore": geo.fscore,
        "precision": geo.precision,
        "recall": geo.recall,
        "fscore_tau": tau,
        "extent": extent,
        "extent_definition": "bounding-box diagonal of the ground-truth mesh",
        "mesh_psnr": psnr(mesh_render, images["truth"].rgb),
        "mesh_threshold": mesh.threshold,
        "mesh_faces": int(len(mesh.faces)),
        "texture": {"size": config.mesh.texture_size, "atlas": textured.atlas, "charts": textured.charts},
        "wall_time_s": time.perf_counter() - t0,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "config": asdict(config),
    }
    if out_dir is not None:
        write_outputs(Path(out_dir), metrics, history, {**images, "mesh": mesh_render}, mesh, textured, renderer)
    return metrics


def write_outputs(out_dir: Path, metrics: dict, history: list[dict], images: dict, mesh, textured: TexturedMesh, renderer: Renderer) -> None:
    """metrics.json, train_log.csv, a comparison sheet (truth | render | depth | textured mesh), meshes, weights."""
    out_dir.mkdir(parents=True, exist_ok=True)
    truth, renders = images["truth"], images["renders"]
    depth = renders["depth"]
    scale = float(truth.depth.max()) or 1.0
    rows = [truth.rgb, renders["image"], (depth / scale)[..., None].expand_as(renders["image"]), images["mesh"]]
    sheet = torch.cat([torch.cat(list(row), dim=1) for row in rows], dim=0)
    save_image(sheet, out_dir / "comparison.png")
    for suffix in (".ply", ".obj", ".glb"):
        export_mesh(mesh, out_dir / f"mesh{suffix}")
    export_textured(textured, out_dir)
    lines = ["step,loss,psnr,time_s"] + [f"{h['step']},{h['loss']:.6g},{h['psnr']:.4f},{h['time_s']:.3f}" for h in history]
    write_bytes_atomic(out_dir / "train_log.csv", ("\n".join(lines) + "\n").encode())
    buffer = io.BytesIO()
    torch.save(renderer.state_dict(), buffer)
    write_bytes_atomic(out_dir / "field.pt", buffer.getvalue())
    write_json_atomic(out_dir / "metrics.json", finite(metrics))  # strict JSON: an empty mask's IoU is NaN


def summary_line(metrics: dict) -> str:
    """One line per scene for the terminal."""
    return (
        f"{metrics['scene']}: PSNR {metrics['psnr']:.2f} dB (textured mesh {metrics['mesh_psnr']:.2f} dB), Chamfer "
        f"{100 * metrics['chamfer_fraction_of_extent']:.2f}% of extent, F-score@1% {metrics['fscore']:.3f}, {metrics['steps']} steps, "
        f"{metrics['wall_time_s']:.0f} s"
    )
