"""Watertight primitive meshes for the analytic scenes: boxes, spheres, cones, tori, lathes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hifa.lazy import open3d as o3d


def _finish(mesh: o3d.geometry.TriangleMesh) -> o3d.geometry.TriangleMesh:
    mesh.compute_triangle_normals()
    mesh.compute_vertex_normals()
    return mesh


def _place(mesh: o3d.geometry.TriangleMesh, center: Sequence[float], rotation_deg: Sequence[float] | None) -> o3d.geometry.TriangleMesh:
    if rotation_deg is not None:
        rot = o3d.geometry.get_rotation_matrix_from_xyz(np.deg2rad(np.asarray(rotation_deg, dtype=float)))
        mesh.rotate(rot, center=(0.0, 0.0, 0.0))
    mesh.translate(np.asarray(center, dtype=float))
    return _finish(mesh)


def box(size: Sequence[float], center: Sequence[float] = (0, 0, 0), rotation_deg: Sequence[float] | None = None) -> o3d.geometry.TriangleMesh:
    """Axis-aligned box of `size` (x, y, z) centred at `center`."""
    mesh = o3d.geometry.TriangleMesh.create_box(*size)
    mesh.translate(-np.asarray(size, dtype=float) / 2)
    return _place(mesh, center, rotation_deg)


def sphere(radius: float, center: Sequence[float] = (0, 0, 0), resolution: int = 48) -> o3d.geometry.TriangleMesh:
    """UV sphere."""
    return _place(o3d.geometry.TriangleMesh.create_sphere(radius, resolution), center, None)


def cone(radius: float, height: float, center: Sequence[float] = (0, 0, 0), rotation_deg: Sequence[float] | None = None) -> o3d.geometry.TriangleMesh:
    """Cone with its base at `center` and its tip along +z (before rotation)."""
    return _place(o3d.geometry.TriangleMesh.create_cone(radius, height, 48), center, rotation_deg)


def torus(major: float, minor: float, center: Sequence[float] = (0, 0, 0), rotation_deg: Sequence[float] | None = None) -> o3d.geometry.TriangleMesh:
    """Torus around the z axis (before rotation)."""
    return _place(o3d.geometry.TriangleMesh.create_torus(major, minor, 64, 32), center, rotation_deg)


def lathe(profile: Sequence[tuple[float, float]], segments: int = 64, center: Sequence[float] = (0, 0, 0)) -> o3d.geometry.TriangleMesh:
    """Revolve a profile of (radius, height) points around +y into a watertight mesh.

    The profile must start and end on the axis (radius 0) and not touch it in between;
    it may fold back (a mug's inner wall), which makes cavities.
    """
    pts = [(float(r), float(y)) for r, y in profile]
    if len(pts) < 3 or pts[0][0] != 0.0 or pts[-1][0] != 0.0 or any(r <= 0.0 for r, _ in pts[1:-1]):
        raise ValueError("a lathe profile starts and ends at radius 0 and stays off the axis in between")
    angles = np.linspace(0.0, 2 * math.pi, segments, endpoint=False)
    vertices = [(0.0, pts[0][1], 0.0)]
    for r, y in pts[1:-1]:
        vertices += [(r * math.sin(a), y, r * math.cos(a)) for a in angles]
    vertices.append((0.0, pts[-1][1], 0.0))
    rings = len(pts) - 2
    ring = lambda i, j: 1 + i * segments + (j % segments)  # noqa: E731
    last = len(vertices) - 1
    faces = []
    for j in range(segments):
        faces.append((0, ring(0, j + 1), ring(0, j)))
        for i in range(rings - 1):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [(a, b, d), (a, d, c)]
        faces.append((last, ring(rings - 1, j), ring(rings - 1, j + 1)))
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.array(vertices)), o3d.utility.Vector3iVector(np.array(faces)))
    if signed_volume(mesh) < 0:
        mesh.triangles = o3d.utility.Vector3iVector(np.asarray(mesh.triangles)[:, ::-1].copy())
    mesh.translate(np.asarray(center, dtype=float))
    return _finish(mesh)


def signed_volume(mesh: o3d.geometry.TriangleMesh) -> float:
    """Signed enclosed volume (positive when faces wind outward)."""
    v = np.asarray(mesh.vertices)[np.asarray(mesh.triangles)]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)
