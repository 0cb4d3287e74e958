"""Mesh extraction: marching cubes on the density grid, open3d clean-up, albedo colours, export."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from skimage import measure

from hifa.errors import HifaError, require
from hifa.field import NeRFField
from hifa.texture import TexturedMesh, texture_mesh
from hifa.uv_atlas import ATLASES, AtlasName
from hifa.volume import alpha_weights, composite
from hifa.io import write_bytes_atomic
from hifa.lazy import open3d as o3d, trimesh

log = logging.getLogger(__name__)
EXPORT_SUFFIXES = (".ply", ".obj", ".glb")


@dataclass(frozen=True)
class MeshConfig:
    """Grid resolution, threshold (None: automatic), clean-up and face budget."""

    resolution: int = 512
    threshold: float | None = None
    auto_bounds: bool = True
    coarse_resolution: int = 64
    min_component_fraction: float = 0.02
    max_faces: int = 100_000
    texture_size: int = 1024
    colour_depth: float = 0.1  # how far below the surface the head-on colour is composited, in units of field.bound
    atlas: AtlasName = "uvatlas"  # the UV atlas tried first: UVAtlas (fewer charts) or xatlas (the same charts every run)
    chunk_points: int = 1 << 18

    def __post_init__(self) -> None:
        require(self.resolution >= 8, "mesh.resolution", f"must be >= 8, got {self.resolution}")
        require(self.coarse_resolution >= 8, "mesh.coarse_resolution", f"must be >= 8, got {self.coarse_resolution}")
        require(self.threshold is None or self.threshold > 0, "mesh.threshold", "must be positive (or null for automatic)")
        require(0.0 <= self.min_component_fraction < 1.0, "mesh.min_component_fraction", "must lie in [0, 1)")
        require(self.max_faces >= 4, "mesh.max_faces", "must be >= 4")
        require(0.0 <= self.colour_depth <= 1.0, "mesh.colour_depth", f"must lie in [0, 1], got {self.colour_depth}")
        require(16 <= self.texture_size <= 8192, "mesh.texture_size", f"must lie in [16, 8192], got {self.texture_size}")
        require(self.atlas in ATLASES, "mesh.atlas", f"must be one of {ATLASES}, got {self.atlas!r}")


@dataclass
class Mesh:
    """A triangle mesh with vertex colours, and how it was extracted."""

    vertices: np.ndarray  # (V, 3) float
    faces: np.ndarray  # (F, 3) int
    colors: np.ndarray | None = None  # (V, 3) in [0, 1]
    threshold: float = float("nan")
    normals: np.ndarray | None = None  # (V, 3) unit, area-weighted from the faces

    def to_open3d(self) -> o3d.geometry.TriangleMesh:
        mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(self.vertices), o3d.utility.Vector3iVector(self.faces))
        if self.colors is not None:
            mesh.vertex_colors = o3d.utility.Vector3dVector(self.colors)
        mesh.compute_vertex_normals()
        return mesh


DensityFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def density_grid(
    density: DensityFn, lo: np.ndarray, hi: np.ndarray, resolution: int | tuple[int, int, int], chunk: int = 1 << 18, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Density sampled on a vertex grid of `resolution` (per axis or one for all) spanning [lo, hi]."""
    res = (int(resolution),) * 3 if np.isscalar(resolution) else tuple(int(r) for r in resolution)
    axes = [torch.linspace(float(lo[d]), float(hi[d]), res[d], device=device) for d in range(3)]
    grid = np.empty(res, dtype=np.float32)
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), dim=-1).reshape(-1, 2)
    # Slabs along x keep memory bounded at 512^3 while each call stays large enough to be fast.
    slab = max(1, chunk // yz.shape[0])
    for start in range(0, res[0], slab):
        xs = axes[0][start : start + slab]
        points = torch.cat([xs.repeat_interleave(yz.shape[0])[:, None], yz.repeat(len(xs), 1)], dim=-1)
        grid[start : start + len(xs)] = density(points).reshape(len(xs), res[1], res[2]).float().cpu().numpy()
    return finite_density(grid)


SATURATED = float(np.finfo(np.float32).max)  # where an overflowed (+inf) density goes: solid at any threshold


def finite_density(grid: np.ndarray) -> np.ndarray:
    """The grid with NaN as empty (0) and +inf (an exp that overflowed) as SATURATED, so meshing and Otsu see numbers."""
    bad = ~np.isfinite(grid)
    if bad.any():
        log.warning("mesh: %d of %d density samples were not finite (NaN as empty, inf as solid)", int(bad.sum()), grid.size)
        grid = np.nan_to_num(grid, nan=0.0, posinf=SATURATED, neginf=0.0)
    return grid


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of log(1 + density): the split that best separates empty and solid (non-finite and
    saturated values left out: they would stretch the histogram over the range of float32)."""
    values = np.asarray(values).ravel()
    logs = np.log1p(np.clip(values[np.isfinite(values) & (values < SATURATED)], 0.0, None))
    if logs.size == 0:
        raise HifaError("mesh: the field's density is not finite anywhere; the training diverged")
    hist, edges = np.histogram(logs, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    # Clean two-valued grids give a plateau of equally good splits: take its middle.
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(np.expm1(edges[int(round(best.mean())) + 1]))


def marching_cubes(grid: np.ndarray, threshold: float, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface at `threshold` of a grid spanning [lo, hi]: vertices (world) and faces (outward)."""
    if not (grid.min() < threshold < grid.max()):
        raise HifaError(
            f"no surface at density threshold {threshold:.4g}: the field ranges over [{grid.min():.4g}, {grid.max():.4g}]"
        )
    spacing = tuple(float(s) for s in (hi - lo) / (np.array(grid.shape) - 1))
    verts, faces, _, _ = measure.marching_cubes(grid, level=threshold, spacing=spacing, gradient_direction="descent")
    # With (x, y, z) array axes skimage's winding comes out inward for a solid: reverse it.
    return verts + lo, np.ascontiguousarray(faces[:, ::-1]).astype(np.int64)


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, min_component_fraction: float, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop components smaller than a fraction of the largest, decimate to a face budget."""
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(faces))
    mesh.remove_duplicated_vertices()
    mesh.remove_degenerate_triangles()
    clusters, sizes, _ = mesh.cluster_connected_triangles()
    clusters, sizes = np.asarray(clusters), np.asarray(sizes)
    if len(sizes) > 1:
        mesh.remove_triangles_by_mask(sizes[clusters] < min_component_fraction * sizes.max())
        mesh.remove_unreferenced_vertices()
    if len(mesh.triangles) > max_faces:
        mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=max_faces)
        mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles)


def occupied_bounds(grid: np.ndarray, threshold: float, lo: np.ndarray, hi: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of grid cells above threshold, grown by `margin` cells, clipped to [lo, hi]."""
    occupied = np.argwhere(grid > threshold)
    if len(occupied) == 0:
        return lo, hi
    step = (hi - lo) / (np.array(grid.shape) - 1)
    new_lo = lo + (occupied.min(0) - margin) * step
    new_hi = lo + (occupied.max(0) + margin) * step
    return np.maximum(new_lo, lo), np.minimum(new_hi, hi)


@torch.no_grad()
def surface_albedo(field: NeRFField, points: np.ndarray, normals: np.ndarray, depth: float = 0.0, samples: int = 32, chunk: int = 1 << 13) -> np.ndarray:
    """Albedo a camera looking head-on at each surface point sees (method.md §6.6): volume-composited along -normal.

    The ray starts depth/5 outside the point and ends `depth` inside it (`samples` midpoints); the composite is
    normalised by its opacity. A density iso-surface lies where the field is still thin: the albedo exactly
    there is barely trained (the oracle world's white backdrop shows through) while the renders see the colour
    of the denser shell below. depth = 0, or a ray that meets no density, takes the albedo at the point itself.
    """
    device = next(field.parameters()).device
    colours = []
    fractions = (torch.arange(samples, device=device, dtype=torch.float32) + 0.5) / samples
    for start in range(0, len(points), chunk):
        p = torch.as_tensor(points[start : start + chunk], dtype=torch.float32, device=device)
        n = torch.as_tensor(normals[start : start + chunk], dtype=torch.float32, device=device)
        _, feature = field.density_features(p, exact=True)
        colour = field.albedo(feature, -n, exact=True)
        if depth > 0 and len(p):
            length = 1.2 * depth
            along = (p + 0.2 * depth * n)[:, None] - (fractions * length)[None, :, None] * n[:, None]  # (N, S, 3)
            sigma, features = field.density_features(along.reshape(-1, 3), exact=True)
            albedo = field.albedo(features, -n, rays=samples, exact=True).reshape(len(p), samples, 3)
            _, weights = alpha_weights(sigma.reshape(len(p), samples), torch.full_like(sigma.reshape(len(p), samples), length / samples))
            opacity = weights.sum(-1, keepdim=True)
            seen = composite(weights, albedo) / opacity.clamp(min=1e-12)
            colour = torch.where(opacity > 1e-4, seen, colour)
        colours.append(colour.cpu().numpy())
    return np.concatenate(colours) if colours else np.zeros((0, 3))


def albedo_colours(field: NeRFField, depth: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """`surface_albedo` of the field as a function of (points, normals)."""
    return functools.partial(surface_albedo, field, depth=depth)


def texture_extracted(field: NeRFField, mesh: Mesh, config: MeshConfig) -> TexturedMesh:
    """The extracted mesh UV-textured with the field's albedo seen head-on (config's texture_size, colour_depth, atlas)."""
    colours = albedo_colours(field, config.colour_depth * field.config.bound)
    return texture_mesh(colours, mesh.vertices, mesh.faces, mesh.normals, config.texture_size, config.atlas)


@torch.no_grad()
def extract_mesh(field: NeRFField, config: MeshConfig) -> Mesh:
    """Marching cubes on the field's density, cleaned, decimated and coloured by the albedo seen head-on."""
    device = next(field.parameters()).device
    bound = field.config.bound
    lo, hi = np.full(3, -bound), np.full(3, bound)
    threshold = config.threshold
    # fp32 MLPs whatever field.mlp_precision (bf16 on CUDA by default): the asset is made once, and bf16's
    # rounding of densities would move the surface by device.
    density = functools.partial(field.density, exact=True)
    if config.auto_bounds:
        coarse = density_grid(density, lo, hi, config.coarse_resolution, config.chunk_points, device)
        coarse_threshold = threshold if threshold is not None else otsu_threshold(coarse)
        # Keep the fine grid's voxel size while cropping it to where the coarse grid is occupied.
        voxel = 2 * bound / (config.resolution - 1)
        lo, hi = occupied_bounds(coarse, coarse_threshold, lo, hi)
        res = tuple(int(r) for r in np.maximum(np.ceil((hi - lo) / voxel).astype(int) + 1, 8))
    else:
        res = (config.resolution,) * 3
    grid = density_grid(density, lo, hi, res, config.chunk_points, device)
    if threshold is None:
        threshold = otsu_threshold(grid)
        log.info("mesh: automatic density threshold %.4g (Otsu on log density)", threshold)
    vertices, faces = marching_cubes(grid, threshold, lo, hi)
    vertices, faces = clean_mesh(vertices, faces, config.min_component_fraction, config.max_faces)
    normals = np.array(trimesh.Trimesh(vertices, faces, process=False).vertex_normals)  # writable copy
    colors = surface_albedo(field, vertices, normals, config.colour_depth * bound)
    return Mesh(vertices, faces, colors, threshold, normals)


def export_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write .ply, .obj or .glb (with vertex colours), atomically."""
    path = Path(path)
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        raise HifaError(f"cannot export mesh to {path.name!r}; use one of {', '.join(EXPORT_SUFFIXES)}")
    colors = None if mesh.colors is None else (np.clip(mesh.colors, 0, 1) * 255).astype(np.uint8)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False)
    data = tm.export(file_type=path.suffix.lower().lstrip("."))
    return write_bytes_atomic(path, data.encode() if isinstance(data, str) else data)
