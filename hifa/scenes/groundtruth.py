"""Renders of a scene (or an exported mesh) by open3d ray casting: albedo RGB, planar depth, mask, normals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hifa.cameras import Cameras
from hifa.lazy import open3d as o3d
from hifa.scenes.scene import Scene
from hifa.texture import sample_texture


@dataclass
class GroundTruth:
    """Per-view ground truth: rgb (B,H,W,3), depth (B,H,W), mask (B,H,W), normals (B,H,W,3)."""

    rgb: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    normals: torch.Tensor


class GroundTruthRenderer:
    """Casts the renderer's own rays (same directions, same planar-depth parameter) into a scene."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self._raycast = o3d.t.geometry.RaycastingScene()
        self._parts = scene.parts
        self._colors: list[np.ndarray] = []
        self._triangles: list[np.ndarray] = []
        for part in scene.parts:
            self._raycast.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(part.mesh))
            self._colors.append(part.vertex_colors().astype(np.float32))
            self._triangles.append(np.asarray(part.mesh.triangles))

    def cast(self, origins: torch.Tensor, directions: torch.Tensor, background: float = 1.0) -> dict[str, torch.Tensor]:
        """Hit depth (t along the unnormalised direction; 0 on a miss), mask, albedo and normal per ray."""
        rays = torch.cat([origins, directions], dim=-1).reshape(-1, 6).detach().cpu().numpy().astype(np.float32)
        hit = self._raycast.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy()
        mask = np.isfinite(t)
        geometry = hit["geometry_ids"].numpy()
        primitive = hit["primitive_ids"].numpy()
        uv = hit["primitive_uvs"].numpy()
        rgb = np.full((len(t), 3), background, dtype=np.float32)
        for gid, (part, colors, triangles) in enumerate(zip(self._parts, self._colors, self._triangles)):
            sel = mask & (geometry == gid)
            if sel.any():
                u, v = uv[sel, 0:1], uv[sel, 1:2]
                corners = triangles[primitive[sel]]  # (n, 3 vertices)
                if part.texture is not None:
                    at = part.uvs[corners]  # (n, 3, 2)
                    rgb[sel] = sample_texture(part.texture, (1 - u - v) * at[:, 0] + u * at[:, 1] + v * at[:, 2])
                else:
                    c = colors[corners]
                    rgb[sel] = (1 - u - v) * c[:, 0] + u * c[:, 1] + v * c[:, 2]
        normals = hit["primitive_normals"].numpy()
        normals[~mask] = 0.0
        shape = origins.shape[:-1]
        as_tensor = lambda a, *tail: torch.from_numpy(np.ascontiguousarray(a)).reshape(*shape, *tail)  # noqa: E731
        return {
            "rgb": as_tensor(rgb.clip(0, 1), 3),
            "depth": as_tensor(np.where(mask, t, 0.0).astype(np.float32)),
            "mask": as_tensor(mask.astype(np.float32)),
            "normals": as_tensor(normals.astype(np.float32), 3),
        }

    def render(self, cameras: Cameras, height: int, width: int, background: float = 1.0) -> GroundTruth:
        """Ground truth for each camera at height x width."""
        origins, directions = cameras.rays(height, width)
        out = self.cast(origins.reshape(len(cameras), height, width, 3), directions.reshape(len(cameras), height, width, 3), background)
        return GroundTruth(out["rgb"], out["depth"], out["mask"], out["normals"])


def export_groundtruth(scene: Scene, out: Path, views: int, resolution: int) -> Path:
    """out/groundtruth.png (RGB, depth and normal rows at `views` orbit cameras) and out/groundtruth.ply; returns out."""
    from hifa.cameras import orbit_cameras
    from hifa.io import save_image
    from hifa.mesh import Mesh, export_mesh

    truth = GroundTruthRenderer(scene).render(orbit_cameras(views), resolution, resolution)
    depth = truth.depth / max(float(truth.depth.max()), 1e-6)
    rows = [truth.rgb, depth[..., None].expand_as(truth.rgb), truth.normals * 0.5 + 0.5 * truth.mask[..., None]]
    save_image(torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0), out / "groundtruth.png")
    mesh = scene.mesh()
    export_mesh(Mesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), np.asarray(mesh.vertex_colors)), out / "groundtruth.ply")
    return out
