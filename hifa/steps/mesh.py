"""`hifa mesh R`: marching cubes on the trained density (method.md §6.6), exports and a shaded preview."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hifa.cameras import orbit_cameras
from hifa.errors import require
from hifa.io import save_image, write_json_atomic
from hifa.mesh import MeshConfig, export_mesh, extract_mesh, texture_extracted
from hifa.run_folder import clear_outputs, load_run, log_artifacts, run_dir, step_dir
from hifa.texture import TexturedMesh, export_textured

SCHEMA = "hifa.mesh/1"
EXPORTS = ("mesh.ply", "mesh.obj", "mesh.glb")
TEXTURED = "textured"  # textured.glb, and textured.obj with its .mtl and .png


def preview(mesh: TexturedMesh, views: int = 4, resolution: int = 256) -> torch.Tensor:
    """Ray-cast (open3d, CPU) shaded renders of the textured mesh: a row of `views` images (H, W*views, 3)."""
    from hifa.scenes import GroundTruthRenderer, Scene, textured_part

    scene = Scene("mesh", "mesh", [textured_part(mesh.vertices, mesh.faces, mesh.uvs, mesh.texture)])
    fovy = 20.0  # frame the mesh's bounding sphere (about the origin, where the cameras look)
    reach = float(np.linalg.norm(mesh.vertices, axis=1).max()) if len(mesh.vertices) else 1.0
    cams = orbit_cameras(views, polar_deg=70.0, radius=max(1.15 * reach / math.sin(math.radians(fovy / 2)), 1e-3), fovy_deg=fovy, start_azimuth_deg=30.0)
    truth = GroundTruthRenderer(scene).render(cams, resolution, resolution, background=1.0)
    # Headlight from above-left of each camera: albedo * (0.3 + 0.7 max(0, n.l)), white background.
    lights = torch.nn.functional.normalize(cams.c2w[:, :3, 2] + 0.5 * cams.c2w[:, :3, 1] - 0.3 * cams.c2w[:, :3, 0], dim=-1)
    lambert = (truth.normals * lights[:, None, None, :]).sum(-1).abs().clamp(0, 1)  # abs: either winding looks lit
    shaded = truth.rgb * (0.3 + 0.7 * lambert)[..., None]
    shaded = torch.where(truth.mask[..., None] > 0.5, shaded, torch.ones_like(shaded))
    return torch.cat(list(shaded), dim=1)


def colour_note(depth: float) -> str:
    """What the mesh's colours are, for mesh.json (mesh.colour_depth)."""
    if depth <= 0:
        return "albedo at the surface point"
    return f"albedo seen head-on: composited along -n from {0.2 * depth:g} outside to {depth:g} inside the surface (x field.bound)"


OTSU = "otsu"  # a threshold option asking for the automatic level whatever the run's mesh.threshold


@dataclass(frozen=True)
class MeshOptions:
    """What `hifa mesh` changes in the run's mesh config (None keeps the run's value), and the preview size."""

    resolution: int | None = None
    texture_size: int | None = None
    atlas: str | None = None
    threshold: float | str | None = None  # a density, or OTSU
    preview_resolution: int = 256

    def __post_init__(self) -> None:
        require(self.threshold is None or self.threshold == OTSU or (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)),
                "mesh.threshold", f"must be a positive density or {OTSU!r}, got {self.threshold!r}")
        require(self.preview_resolution >= 8, "mesh.preview_resolution", f"must be >= 8, got {self.preview_resolution}")

    def apply(self, mesh: MeshConfig) -> MeshConfig:
        """The run's mesh config with these options laid over it (validated by MeshConfig)."""
        changes = {k: v for k, v in (("resolution", self.resolution), ("texture_size", self.texture_size), ("atlas", self.atlas)) if v is not None}
        if self.threshold is not None:
            changes["threshold"] = None if self.threshold == OTSU else float(self.threshold)
        return replace(mesh, **changes)


def mesh_run(run: str | Path, options: MeshOptions | None = None, out: str | Path | None = None) -> dict:
    """Extract, export .ply/.obj/.glb, a UV-textured .glb/.obj and preview.png into `out` (default R/mesh); mesh.json last."""
    t0 = time.perf_counter()
    options = options or MeshOptions()
    run = run_dir(run)
    config, renderer, step = load_run(run)
    mesh_config = options.apply(config.mesh)
    out = step_dir(run, "mesh", out)
    # An earlier mesh's files would otherwise sit beside a failed re-run's, looking like its output.
    clear_outputs(out, [*EXPORTS, f"{TEXTURED}.*", "preview.png"])
    mesh = extract_mesh(renderer.field, mesh_config)
    for name in EXPORTS:
        export_mesh(mesh, out / name)
    t_texture = time.perf_counter()
    textured = texture_extracted(renderer.field, mesh, mesh_config)
    textured_files = {kind: path.name for kind, path in export_textured(textured, out, TEXTURED).items()}
    t_texture = time.perf_counter() - t_texture
    save_image(preview(textured, resolution=options.preview_resolution), out / "preview.png")
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    result = {
        "schema": SCHEMA,
        "run": str(run),
        "prompt": config.prompt,
        "method": config.preset,
        "step": step,
        "threshold": float(mesh.threshold),
        "threshold_mode": "fixed (mesh.threshold)" if mesh_config.threshold is not None else "automatic (Otsu on log(1 + density))",
        "resolution": mesh_config.resolution,
        "grid": "marching cubes over [-bound, bound]^3 at this resolution, cropped to the occupied box" if mesh_config.auto_bounds else "marching cubes over [-bound, bound]^3",
        "vertices": int(len(mesh.vertices)),
        "faces": int(len(mesh.faces)),
        "bounds": {"min": [float(v) for v in lo], "max": [float(v) for v in hi]},
        "vertex_colors": colour_note(mesh_config.colour_depth) if mesh.colors is not None else None,
        "texture": {
            "size": mesh_config.texture_size,
            "atlas": textured.atlas,
            "charts": textured.charts,
            "coverage": textured.coverage,
            "vertices": int(len(textured.vertices)),
            "content": f"{colour_note(mesh_config.colour_depth)}, baked per texel; texels outside the charts take the nearest chart's colour",
            "files": textured_files,
            "wall_time_s": t_texture,
        },
        "mesh_config": {k: getattr(mesh_config, k) for k in ("resolution", "threshold", "auto_bounds", "coarse_resolution", "min_component_fraction", "max_faces", "texture_size", "atlas")},
        "files": {"ply": EXPORTS[0], "obj": EXPORTS[1], "glb": EXPORTS[2], "preview": "preview.png"},
        "wall_time_s": time.perf_counter() - t0,
    }
    write_json_atomic(out / "mesh.json", result)
    log_artifacts(run, [out / "mesh.glb", out / f"{TEXTURED}.glb", out / "preview.png"], "mesh")
    return result

