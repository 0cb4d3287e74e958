"""UV-textured meshes: a UV atlas (hifa.uv_atlas), a colour baked per texel, .glb and .obj exports.

UV convention (OBJ's, which trimesh follows and converts for glTF): u runs left to right, v bottom to top,
so texel (row r, column c) of an S x S image has its centre at u = (c + 0.5) / S, v = 1 - (r + 0.5) / S.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hifa.errors import HifaError
from hifa.io import to_uint8, write_bytes_atomic
from hifa.lazy import trimesh
from hifa.uv_atlas import AtlasName, atlas_order, cell_layout, uv_atlas

# Colours at surface points seen head-on: (points (N, 3), normals (N, 3)) -> (N, 3) in [0, 1].
ColourFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
MATERIAL = "albedo"


@dataclass
class TexturedMesh:
    """A mesh with its vertices split along UV seams, their UVs, normals and an albedo texture."""

    vertices: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3)
    uvs: np.ndarray  # (V, 2) in [0, 1]
    normals: np.ndarray  # (V, 3) unit
    texture: np.ndarray  # (S, S, 3) in [0, 1]
    charts: int = 0
    coverage: float = 0.0  # fraction of texels inside a chart
    atlas: str = ""  # which atlas made the UVs (hifa.uv_atlas)


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int, chunk: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Which face covers each texel centre, and its barycentric coordinates there: (S, S) ints (-1: none), (S, S, 3)."""
    face_id = np.full((size, size), -1, dtype=np.int64)
    bary = np.zeros((size, size, 3), dtype=np.float64)
    # Texel centres at integer (x, y) = (column, row).
    corners = np.stack([uvs[faces][..., 0] * size - 0.5, (1.0 - uvs[faces][..., 1]) * size - 0.5], axis=-1)  # (F, 3, 2)
    lo = np.clip(np.ceil(corners.min(1)), 0, size - 1).astype(np.int64)
    hi = np.clip(np.floor(corners.max(1)), 0, size - 1).astype(np.int64)
    extent = np.maximum(hi - lo + 1, 0)
    count = extent[:, 0] * extent[:, 1]
    (a, b, c) = (corners[:, 0], corners[:, 1], corners[:, 2])
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    count[np.abs(area) < 1e-12] = 0  # degenerate in UV space: covers no texel
    ends = np.cumsum(count)
    start = 0
    while start < len(faces):
        # Faces whose candidate texels (their UV bounding boxes) fit in one chunk, at least one face.
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + chunk, side="right")), start + 1)
        idx = np.arange(start, stop)
        n = count[idx]
        f = np.repeat(idx, n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        x = lo[f, 0] + local % extent[f, 0]
        y = lo[f, 1] + local // extent[f, 0]
        w = _barycentric(np.stack([x, y], -1).astype(np.float64), a[f], b[f], c[f], area[f])
        inside = (w >= -1e-9).all(-1)
        face_id[y[inside], x[inside]] = f[inside]
        bary[y[inside], x[inside]] = w[inside]
        start = stop
    return face_id, bary


def _barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of 2-D points p in triangles (a, b, c) of signed doubled area `area`."""

    def edge(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
        return (p1[:, 0] - p0[:, 0]) * (p[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p[:, 0] - p0[:, 0])

    return np.stack([edge(b, c), edge(c, a), edge(a, b)], -1) / area[:, None]


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of (S, S, C) `texture` at (N, 2) UVs (clamped to the edge texels): (N, C)."""
    size_y, size_x = texture.shape[:2]
    x = np.clip(uv[:, 0] * size_x - 0.5, 0, size_x - 1)
    y = np.clip((1.0 - uv[:, 1]) * size_y - 0.5, 0, size_y - 1)
    x0, y0 = np.minimum(np.floor(x).astype(np.int64), size_x - 2).clip(0), np.minimum(np.floor(y).astype(np.int64), size_y - 2).clip(0)
    x1, y1 = np.minimum(x0 + 1, size_x - 1), np.minimum(y0 + 1, size_y - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def fill_empty(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Every texel no face covers takes the colour of the nearest covered one (no dark seams when filtered)."""
    from scipy import ndimage

    if covered.all() or not covered.any():
        return image
    _, (rows, cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[rows, cols]


def bake_texture(
    colour: ColourFn, vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, uvs: np.ndarray, size: int
) -> tuple[np.ndarray, float]:
    """The (S, S, 3) texture of `colour` at each texel's surface point, and the fraction of texels charts cover."""
    face_id, bary = rasterize_uv(uvs, faces, size)
    covered = face_id >= 0
    corners = faces[face_id[covered]]  # (N, 3) vertex indices
    weights = bary[covered][..., None]
    points = (vertices[corners] * weights).sum(1)
    normal = (normals[corners] * weights).sum(1)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    image = np.zeros((size, size, 3), dtype=np.float64)
    image[covered] = np.clip(colour(points, normal), 0.0, 1.0) if len(points) else 0.0
    return fill_empty(image, covered), float(covered.mean())


def bake_cells(colour: ColourFn, vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """The texture of the one-cell-per-triangle layout (hifa.uv_atlas.triangle_charts): cell i flat in the colour
    at face i's centroid; and the fraction of texels in a face's cell."""
    per_side, cell = cell_layout(len(faces), size)
    normal = normals[faces].sum(1)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    grid = np.ones((per_side * per_side, 3))
    grid[: len(faces)] = np.clip(colour(vertices[faces].mean(1), normal), 0.0, 1.0)
    block = np.repeat(np.repeat(grid.reshape(per_side, per_side, 3), cell, axis=0), cell, axis=1)
    image, covered = np.zeros((size, size, 3)), np.zeros((size, size), dtype=bool)
    image[: len(block), : len(block)] = block
    covered[: len(block), : len(block)] = True
    return fill_empty(image, covered), len(faces) * cell * cell / size**2


def texture_mesh(colour: ColourFn, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, size: int,
                 atlas_first: AtlasName = "uvatlas") -> TexturedMesh:
    """Atlas the mesh (`atlas_first`'s library first), split it along the seams and bake `colour` into an S x S texture."""
    atlas = uv_atlas(vertices, faces, size, atlas_order(atlas_first))
    split_vertices, split_normals = vertices[atlas.source], normals[atlas.source]
    if atlas.method == "per-triangle":
        texture, coverage = bake_cells(colour, vertices, normals, faces, size)
    else:
        texture, coverage = bake_texture(colour, split_vertices, split_normals, atlas.faces, atlas.uvs, size)
    return TexturedMesh(split_vertices, atlas.faces, atlas.uvs, split_normals, texture, atlas.charts, coverage, atlas.method)


def png_bytes(texture: np.ndarray) -> bytes:
    """The texture as 8-bit PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(texture)).save(buffer, format="PNG")
    return buffer.getvalue()


def to_trimesh(mesh: TexturedMesh) -> trimesh.Trimesh:
    """A trimesh with the texture as a matte PBR base colour."""
    from PIL import Image

    image = Image.fromarray(to_uint8(mesh.texture))  # trimesh encodes it into the .glb
    material = trimesh.visual.material.PBRMaterial(name=MATERIAL, baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=mesh.uvs, material=material)
    return trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=mesh.normals, visual=visual, process=False)


def load_textured(path: str | Path) -> TexturedMesh:
    """A textured .glb or .obj written by `export_textured` (any single-texture mesh trimesh reads)."""
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
        image = np.asarray(textured_image(loaded.visual.material).convert("RGB"), dtype=np.float64) / 255.0
        uvs = np.asarray(loaded.visual.uv, dtype=np.float64)
    except Exception as exc:
        raise HifaError(f"cannot read the textured mesh {path}: {exc.__class__.__name__}; run `hifa mesh` again") from None
    if len(loaded.faces) == 0 or len(uvs) != len(loaded.vertices):
        raise HifaError(f"the textured mesh {path} has no faces or no UV per vertex; run `hifa mesh` again")
    normals = np.asarray(loaded.vertex_normals, dtype=np.float64)
    return TexturedMesh(np.asarray(loaded.vertices, np.float64), np.asarray(loaded.faces, np.int64), uvs, normals, image)


def textured_image(material: object):
    """The base-colour image of a trimesh material (PBR from glTF, simple from OBJ)."""
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is None:
        raise ValueError("no texture image")
    return image


def obj_text(mesh: TexturedMesh, mtl_name: str) -> str:
    """Wavefront OBJ with positions, UVs and normals, one index per attribute (the vertices are split at seams)."""
    lines = [f"mtllib {mtl_name}", f"usemtl {MATERIAL}"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in mesh.uvs]
    lines += [f"vn {x:.5f} {y:.5f} {z:.5f}" for x, y, z in mesh.normals]
    lines += ["f " + " ".join(f"{i}/{i}/{i}" for i in face) for face in mesh.faces + 1]
    return "\n".join(lines) + "\n"


def mtl_text(texture_name: str) -> str:
    """The OBJ material: matte, albedo from the texture."""
    return f"newmtl {MATERIAL}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {texture_name}\n"


def export_textured(mesh: TexturedMesh, folder: str | Path, stem: str = "textured") -> dict[str, Path]:
    """Write <stem>.glb (texture embedded) and <stem>.obj + .mtl + .png, each atomically."""
    folder = Path(folder)
    png, mtl = f"{stem}.png", f"{stem}.mtl"
    return {
        "png": write_bytes_atomic(folder / png, png_bytes(mesh.texture)),
        "mtl": write_bytes_atomic(folder / mtl, mtl_text(png).encode()),
        "obj": write_bytes_atomic(folder / f"{stem}.obj", obj_text(mesh, mtl).encode()),
        "glb": write_bytes_atomic(folder / f"{stem}.glb", to_trimesh(mesh).export(file_type="glb")),
    }
