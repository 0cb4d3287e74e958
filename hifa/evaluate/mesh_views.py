"""Views of the exported textured mesh at the render cameras: ray-cast (open3d, CPU), unlit albedo on white."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hifa.cameras import Cameras


def textured_views(path: str | Path, cameras: Cameras, height: int, width: int) -> np.ndarray:
    """(V, H, W, 3) uint8 views, like the saved renders, of the mesh file at `path` (textured.glb)."""
    from hifa.io import to_uint8
    from hifa.lazy import open3d as o3d
    from hifa.scenes import GroundTruthRenderer, Part, Scene
    from hifa.texture import load_textured

    mesh = load_textured(path)
    legacy = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices), o3d.utility.Vector3iVector(mesh.faces))
    renderer = GroundTruthRenderer(Scene("mesh", "mesh", [Part(legacy, uvs=mesh.uvs, texture=mesh.texture)]))
    return np.stack([to_uint8(renderer.render(cameras[i : i + 1], height, width, 1.0).rgb[0]) for i in range(len(cameras))])
