"""`hifa render R`: test-camera renders of a trained run (method.md §6.5): RGB, depth, normals, opacity, textureless."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hifa.cameras import Cameras, orbit_cameras
from hifa.errors import require
from hifa.io import save_image, to_uint8, write_json_atomic, write_npz_atomic
from hifa.media import colorize, contact_sheet, normalise, planar_depth, write_turntable
from hifa.renderer import RayOptions
from hifa.run_folder import clear_outputs, load_run, log_artifacts, run_dir, step_dir

SCHEMA = "hifa.render/1"
AMBIENT = 0.1  # textureless shading: ambient + (1 - ambient) max(0, n . l), white albedo
GPU_CHUNK = 1 << 16
KINDS = ("rgb", "textureless", "depth", "normal", "opacity")


@dataclass(frozen=True)
class RenderOptions:
    """The evaluation orbit; defaults are method.md §6.5's test cameras (polar 70°, r 3.2, fovy 20°, 100 views, 512²)."""

    views: int = 100
    elevation_deg: float = 20.0
    radius: float = 3.2
    fovy_deg: float = 20.0
    resolution: int = 512
    start_azimuth_deg: float = 0.0
    fps: float = 25.0
    chunk_rays: int | None = None  # rays per renderer call; None: the run's renderer.chunk_rays, at least 65536 on CUDA

    def __post_init__(self) -> None:
        require(self.views >= 1, "views", "must be positive")
        require(-90.0 <= self.elevation_deg <= 90.0, "elevation", "must lie in [-90, 90] degrees")
        require(self.radius > 1.0, "radius", "cameras must stay outside the unit bound (radius > 1)")
        require(0.0 < self.fovy_deg < 180.0, "fovy", "must lie in (0, 180) degrees")
        require(self.resolution >= 8, "resolution", "must be >= 8")
        require(self.chunk_rays is None or self.chunk_rays >= 1, "chunk-rays", "must be positive")
        require(math.isfinite(self.start_azimuth_deg), "start-azimuth", f"must be a finite angle in degrees, got {self.start_azimuth_deg}")


# The oracle world runs on CPUs: 100 views at 512^2 would take ~15 min per run there; the demo's 8 at 96^2 take seconds.
ORACLE_VIEWS, ORACLE_RESOLUTION = 8, 96


def default_views_and_resolution(prior_kind: str) -> tuple[int, int]:
    """(views, resolution) when the command line gives none: §6.5's 100 at 512^2, or the demo's size for an oracle run."""
    return (ORACLE_VIEWS, ORACLE_RESOLUTION) if prior_kind == "oracle" else (RenderOptions.views, RenderOptions.resolution)


def render_cameras(options: RenderOptions) -> Cameras:
    """The orbit: `views` azimuths evenly spaced from `start_azimuth_deg`, polar 90° - elevation."""
    return orbit_cameras(options.views, 90.0 - options.elevation_deg, options.radius, options.fovy_deg, options.start_azimuth_deg)


def marker_cameras(marker: dict) -> Cameras:
    """The cameras a finished render step used, rebuilt from its render.json."""
    cams = marker["cameras"]
    return orbit_cameras(int(cams["views"]), float(cams["polar_deg"]), float(cams["radius"]), float(cams["fovy_deg"]), float(cams["start_azimuth_deg"]))


def light_direction(camera: Cameras) -> torch.Tensor:
    """A light from the camera, raised and to its left (camera axes), so that surfaces facing the camera are shaded."""
    c2w = camera.c2w[0]
    return F.normalize(c2w[:3, 2] + 0.5 * c2w[:3, 1] - 0.3 * c2w[:3, 0], dim=0)


def view_name(index: int, count: int) -> str:
    """Zero-padded file stem of view `index` (at least three digits)."""
    return f"{index:0{max(3, len(str(count - 1)))}d}"


@torch.no_grad()
def render_view(renderer, camera: Cameras, resolution: int) -> dict[str, np.ndarray]:
    """One view: albedo RGB, depth and opacity; then textureless shading (white albedo), which also gives normals."""
    white = torch.ones(3)
    colour = renderer.render_views(camera, resolution, resolution, RayOptions(background=white))
    light = light_direction(camera).to(next(renderer.parameters()).device)
    plain = renderer.render_views(camera, resolution, resolution, RayOptions(background=white, shading="textureless", light_dir=light, ambient=AMBIENT))
    return {
        "rgb": colour["image"][0].cpu().numpy(),
        "depth": colour["depth"][0].cpu().numpy(),
        "opacity": colour["opacity"][0].cpu().numpy(),
        "textureless": plain["image"][0].cpu().numpy(),
        "normal": plain["normals"][0].cpu().numpy(),
    }


def render_run(run: str | Path, options: RenderOptions, out: str | Path | None = None, progress: bool = True) -> dict:
    """Render every view of the orbit into `out` (default R/render); render.json is written last."""
    t0 = time.perf_counter()
    run = run_dir(run)
    config, renderer, step = load_run(run)
    # Chunking changes memory and speed only: small chunks leave a GPU idle between kernel launches.
    chunk = options.chunk_rays or max(config.renderer.chunk_rays, GPU_CHUNK if next(renderer.parameters()).is_cuda else 0)
    renderer.config = replace(renderer.config, chunk_rays=chunk)
    out = step_dir(run, "render", out)
    clear_outputs(out, [f"{kind}/*.png" for kind in KINDS] + ["turntable.mp4", "turntable.gif"])
    cams = render_cameras(options)
    count = len(cams)
    names = [view_name(i, count) for i in range(count)]
    files: dict[str, list[str]] = {kind: [f"{kind}/{name}.png" for name in names] for kind in KINDS}
    depth = np.zeros((count, options.resolution, options.resolution), np.float32)
    opacity = np.zeros_like(depth)
    frames: dict[str, list[np.ndarray]] = {"rgb": [], "textureless": [], "normal": []}
    for i in tqdm(range(count), desc="render", unit="view", disable=not progress, dynamic_ncols=True):
        view = render_view(renderer, cams[i], options.resolution)
        depth[i], opacity[i] = view["depth"], view["opacity"]
        for kind in frames:
            frames[kind].append(to_uint8(view[kind]))
            save_image(frames[kind][-1], out / files[kind][i])
        save_image(view["opacity"], out / files["opacity"][i])
    surface = planar_depth(depth, opacity)
    _, depth_range = normalise(surface, opacity)
    depth_frames = []
    for i in range(count):
        scaled, _ = normalise(surface[i], opacity[i], depth_range)
        depth_frames.append(to_uint8(colorize(1.0 - scaled, opacity[i])))  # near = warm
        save_image(depth_frames[-1], out / files["depth"][i])
    write_npz_atomic(out / "depth.npz", depth=depth, opacity=opacity)
    turntable = write_turntable(frames["rgb"], out / "turntable.mp4", options.fps)
    rows = [torch.from_numpy(np.stack(frames[k]) / 255.0) for k in ("rgb", "textureless")]
    rows += [torch.from_numpy(np.stack(depth_frames) / 255.0), torch.from_numpy(np.stack(frames["normal"]) / 255.0)]
    save_image(contact_sheet(rows, labels=["RGB", "textureless", "depth", "normals"]), out / "contact_sheet.png")
    marker = {
        "schema": SCHEMA,
        "run": str(run),
        "prompt": config.prompt,
        "method": config.preset,
        "prior": config.prior.kind,
        "step": step,
        "cameras": {
            "views": count,
            "elevation_deg": options.elevation_deg,
            "polar_deg": 90.0 - options.elevation_deg,
            "radius": options.radius,
            "fovy_deg": options.fovy_deg,
            "start_azimuth_deg": options.start_azimuth_deg,
            "azimuth_deg": [round(float(a), 6) for a in cams.azimuth_deg],
            "convention": "look-at the origin, up +y, position (r sin(polar) sin(azimuth), r cos(polar), r sin(polar) cos(azimuth))",
        },
        "resolution": options.resolution,
        "background": [1.0, 1.0, 1.0],
        "shading": {
            "rgb": "albedo (view-dependent colour), white background, as the training run's final views",
            "textureless": f"white albedo, ambient {AMBIENT} + {1 - AMBIENT} max(0, n.l), light from the camera raised and to its left",
            "normal": "world-space normals (n + 1) / 2 composited over white",
            "depth": "planar depth depth/O coloured by the turbo map over depth_range (near = red), white where O <= 0.5",
            "opacity": "O = sum of weights, grey scale",
        },
        "depth_range": list(depth_range),
        "depth_npz": {"file": "depth.npz", "arrays": {"depth": "sum_k w_k z_k (planar, not divided by O), (V, H, W) float32", "opacity": "O = sum_k w_k, (V, H, W) float32"}},
        "counts": {kind: count for kind in KINDS},
        "files": {**files, "depth_npz": "depth.npz", "turntable": turntable.name, "contact_sheet": "contact_sheet.png"},
        "options": {**asdict(options), "chunk_rays": chunk},
        "wall_time_s": time.perf_counter() - t0,
    }
    write_json_atomic(out / "render.json", marker)
    log_artifacts(run, [out / "contact_sheet.png", turntable], "render")
    return marker
