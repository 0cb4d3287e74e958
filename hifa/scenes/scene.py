"""A scene: coloured watertight parts named by a prompt; loading user meshes as scenes."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hifa.errors import HifaError
from hifa.lazy import open3d as o3d

Color = tuple[float, float, float]
DEFAULT_COLOR: Color = (0.7, 0.7, 0.7)
MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")


@dataclass
class Part:
    """One mesh with a solid colour, its own vertex colours when `color` is None, or a texture when given one."""

    mesh: o3d.geometry.TriangleMesh
    color: Color | None = None
    uvs: np.ndarray | None = None  # (V, 2) per vertex, OBJ convention (hifa.texture)
    texture: np.ndarray | None = None  # (S, S, 3) in [0, 1]

    def vertex_colors(self) -> np.ndarray:
        """Per-vertex RGB (V, 3) in [0, 1]."""
        if self.color is None and self.mesh.has_vertex_colors():
            return np.asarray(self.mesh.vertex_colors, dtype=np.float64)
        return np.tile(np.asarray(self.color or DEFAULT_COLOR, dtype=np.float64), (len(self.mesh.vertices), 1))


def textured_part(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, texture: np.ndarray) -> Part:
    """A Part of a UV-textured mesh (hifa.texture's convention)."""
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(faces))
    return Part(mesh, uvs=uvs, texture=texture)


@dataclass
class Scene:
    """Ground-truth geometry and albedo of an object centred at the origin inside [-1, 1]^3."""

    name: str
    prompt: str
    parts: list[Part]
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def mesh(self) -> o3d.geometry.TriangleMesh:
        """All parts as one mesh with vertex colours (parts may overlap)."""
        merged = o3d.geometry.TriangleMesh()
        for part in self.parts:
            piece = o3d.geometry.TriangleMesh(part.mesh)
            piece.vertex_colors = o3d.utility.Vector3dVector(part.vertex_colors())
            merged += piece
        merged.compute_vertex_normals()
        return merged

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box (min, max)."""
        points = np.concatenate([np.asarray(p.mesh.vertices) for p in self.parts])
        return points.min(0), points.max(0)

    def extent(self) -> float:
        """The scene's size: its bounding-box diagonal (metric thresholds are fractions of it)."""
        lo, hi = self.bounds()
        return float(np.linalg.norm(hi - lo))

    def surface_points(self, count: int, seed: int = 0) -> np.ndarray:
        """Points sampled uniformly on the outer surface (parts' faces inside other parts dropped)."""
        areas = np.array([p.mesh.get_surface_area() for p in self.parts])
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(count, areas / areas.sum())
        points = []
        for i, (part, n) in enumerate(zip(self.parts, counts)):
            if n == 0:
                continue
            o3d.utility.random.seed(seed + i)
            pts = np.asarray(part.mesh.sample_points_uniformly(int(n)).points, dtype=np.float32)
            keep = np.ones(len(pts), dtype=bool)
            for j, other in enumerate(self.parts):
                if j != i:
                    keep &= ~_inside(other.mesh, pts)
            points.append(pts[keep])
        return np.concatenate(points)


def _inside(mesh: o3d.geometry.TriangleMesh, points: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    occupancy = scene.compute_occupancy(o3d.core.Tensor(points, dtype=o3d.core.Dtype.Float32), nsamples=3)
    return occupancy.numpy() > 0.5


def slugify(text: str) -> str:
    """A filesystem-safe lowercase name: letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "scene"


def ply_counts(path: Path) -> dict[str, int]:
    """Element counts a PLY header declares ({'vertex': N, 'face': M}); {} when the header cannot be read."""
    counts: dict[str, int] = {}
    try:
        with open(path, "rb") as handle:
            if handle.readline().strip() != b"ply":
                return {}
            for _ in range(200):
                words = handle.readline().split()
                if not words or words[0] == b"end_header":
                    break
                if words[0] == b"element" and len(words) == 3 and words[2].isdigit():
                    counts[words[1].decode("ascii", "replace")] = int(words[2])
    except OSError:
        return {}
    return counts


@contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Send what C code writes to file descriptor 2 (e.g. the PLY reader's messages) into the yielded list."""
    sys.stderr.flush()
    saved = os.dup(2)
    caught: list[str] = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield caught
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            caught.extend(line.strip() for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def scene_from_mesh_file(path: str | Path, prompt: str | None = None, fit_radius: float = 0.5) -> Scene:
    """Load a user mesh as a one-part scene, centred and scaled to fit a sphere of `fit_radius`."""
    path = Path(path)
    if path.is_dir():
        raise HifaError(f"{path} is a folder, not a mesh file")
    if not path.is_file():
        raise HifaError(f"mesh file not found: {path}")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise HifaError(f"unsupported mesh file {path.name!r}; expected one of {', '.join(MESH_SUFFIXES)}")
    try:
        # Open3D's warnings and its PLY reader's messages about an unreadable file would precede the
        # one line that says so: the reader's first message goes into that line instead.
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error), native_stderr_captured() as reader:
            mesh = o3d.io.read_triangle_mesh(str(path))
    except Exception as exc:  # open3d raises RuntimeError on parse failures
        raise HifaError(f"cannot read mesh file {path}: {exc}") from exc
    if len(mesh.triangles) == 0 or not np.isfinite(np.asarray(mesh.vertices)).all():
        said = f" ({reader[0]})" if reader else ""
        raise HifaError(f"cannot read mesh file {path}: no valid triangles found{said}")
    if path.suffix.lower() == ".ply":  # open3d keeps what it read of a truncated PLY, with only a printed warning
        promised = ply_counts(path)
        found = {"vertex": len(mesh.vertices), "face": len(mesh.triangles)}
        short = [f"{found[k]} of the {n} {k}s" for k, n in promised.items() if k in found and found[k] < n]
        if short:
            raise HifaError(f"cannot read mesh file {path}: truncated or corrupt (read {', '.join(short)} its header promises)")
    vertices = np.asarray(mesh.vertices)
    lo, hi = vertices.min(0), vertices.max(0)
    centre = (lo + hi) / 2
    radius = np.linalg.norm(vertices - centre, axis=1).max()
    if radius <= 0:
        raise HifaError(f"cannot read mesh file {path}: the mesh is degenerate (all vertices coincide)")
    mesh.translate(-centre)
    mesh.scale(fit_radius / radius, center=(0.0, 0.0, 0.0))
    mesh.compute_triangle_normals()
    mesh.compute_vertex_normals()
    color = None if mesh.has_vertex_colors() else DEFAULT_COLOR
    name = slugify(path.stem)
    return Scene(name=name, prompt=prompt or path.stem.replace("_", " "), parts=[Part(mesh, color)])
