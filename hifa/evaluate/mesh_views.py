"""Views of the exported textured mesh at the render cameras: ray-cast (open3d, CPU), unlit albedo on white."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hifa.cameras import Cameras
from hifa.texture import TexturedMesh


def render_textured(mesh: TexturedMesh, cameras: Cameras, height: int, width: int) -> np.ndarray:
    """(V, H, W, 3) uint8 views of a textured mesh, like the saved renders (one view at a time: 100 at 512² fit)."""
    from hifa.io import to_uint8
    from hifa.scenes import GroundTruthRenderer, Scene, textured_part

    renderer = GroundTruthRenderer(Scene("mesh", "mesh", [textured_part(mesh.vertices, mesh.faces, mesh.uvs, mesh.texture)]))
    return np.stack([to_uint8(renderer.render(cameras[i : i + 1], height, width, 1.0).rgb[0]) for i in range(len(cameras))])


def textured_views(path: str | Path, cameras: Cameras, height: int, width: int) -> np.ndarray:
    """`render_textured` of the mesh file at `path` (textured.glb)."""
    from hifa.texture import load_textured

    return render_textured(load_textured(path), cameras, height, width)
