"""Views of the exported textured mesh at the render cameras: ray-cast (open3d, CPU), unlit albedo on white."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hifa.cameras import Cameras


def textured_views(path: str | Path, cameras: Cameras, height: int, width: int) -> np.ndarray:
    """(V, H, W, 3) uint8 views, like the saved renders, of the mesh file at `path` (textured.glb)."""
    from hifa.io import to_uint8
    from hifa.scenes import GroundTruthRenderer, Scene, textured_part
    from hifa.texture import load_textured

    mesh = load_textured(path)
    renderer = GroundTruthRenderer(Scene("mesh", "mesh", [textured_part(mesh.vertices, mesh.faces, mesh.uvs, mesh.texture)]))
    return np.stack([to_uint8(renderer.render(cameras[i : i + 1], height, width, 1.0).rgb[0]) for i in range(len(cameras))])
