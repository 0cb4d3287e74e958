"""Audit: primitive placement, lathe checks and ray-cast ground truth (colours, background, depth) by hand geometry."""

import math

import numpy as np
import open3d as o3d
import pytest
import torch

from hifa.cameras import make_cameras
from hifa.scenes import GroundTruthRenderer, Part, Scene, shapes, textured_part

TRIANGLE = np.array([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]])
FACES = np.array([[0, 1, 2]])
POINTS = [(-0.6, -0.7), (0.3, -0.8), (-0.9, 0.5), (-0.2, 0.1)]  # inside the triangle (x + y < 0)


def bounds(mesh):
    v = np.asarray(mesh.vertices)
    return v.min(0), v.max(0)


def cast_down(renderer, points, background=1.0):
    """Rays from z = 1 straight down (-z) through (x, y)."""
    origins = torch.tensor([[x, y, 1.0] for x, y in points], dtype=torch.float32)
    directions = torch.tensor([[0.0, 0.0, -1.0]] * len(points), dtype=torch.float32)
    return renderer.cast(origins, directions, background)


def barycentric(x, y):
    """(w_A, w_B, w_C) of (x, y) on TRIANGLE: P = A + s (B - A) + t (C - A), s = (x + 1) / 2, t = (y + 1) / 2."""
    s, t = (x + 1) / 2, (y + 1) / 2
    return 1 - s - t, s, t


def test_box_is_centred_on_its_centre():
    lo, hi = bounds(shapes.box((0.2, 0.4, 0.6), center=(0.1, -0.2, 0.3)))
    assert np.allclose(lo, [0.0, -0.4, 0.0], atol=1e-12) and np.allclose(hi, [0.2, 0.0, 0.6], atol=1e-12)


def test_rotation_is_in_degrees_about_the_part_s_own_centre():
    # 90 deg about z swaps the x and y extents; the box stays centred on `center`.
    lo, hi = bounds(shapes.box((0.2, 0.4, 0.6), center=(0.3, 0.0, 0.0), rotation_deg=(0, 0, 90)))
    assert np.allclose(lo, [0.1, -0.1, -0.3], atol=1e-9) and np.allclose(hi, [0.5, 0.1, 0.3], atol=1e-9)
    # A torus around z turned 90 deg about x lies flat: its thickness 2 * minor is now along y.
    lo, hi = bounds(shapes.torus(0.3, 0.1, center=(0.0, 0.2, 0.0), rotation_deg=(90, 0, 0)))
    assert lo[1] == pytest.approx(0.1, abs=1e-9) and hi[1] == pytest.approx(0.3, abs=1e-9)
    assert hi[0] == pytest.approx(0.4, abs=1e-9)


def test_lathe_is_placed_at_its_centre():
    square = [(0.0, -0.1), (0.2, -0.1), (0.2, 0.1), (0.0, 0.1)]
    lo, hi = bounds(shapes.lathe(square, segments=4, center=(0.1, 0.2, -0.3)))
    assert np.allclose(lo, [-0.1, 0.1, -0.5], atol=1e-12) and np.allclose(hi, [0.3, 0.3, -0.1], atol=1e-12)


@pytest.mark.parametrize(
    "profile",
    [
        [(0.1, -0.1), (0.2, -0.1), (0.2, 0.1), (0.0, 0.1)],  # starts off the axis
        [(0.0, -0.1), (0.2, -0.1), (0.2, 0.1), (0.1, 0.1)],  # ends off the axis
        [(0.0, -0.1), (0.2, -0.1), (0.0, 0.0), (0.2, 0.1), (0.0, 0.1)],  # touches the axis between
        [(0.0, -0.1), (0.0, 0.1)],  # too short
    ],
)
def test_lathe_rejects_bad_profiles(profile):
    with pytest.raises(ValueError, match="lathe profile"):
        shapes.lathe(profile)


def test_scene_extent_is_the_bounding_box_diagonal():
    scene = Scene("b", "a box", [Part(shapes.box((0.2, 0.4, 0.6), center=(0.5, 0.0, 0.0)), (1, 1, 1))])
    assert scene.extent() == pytest.approx(math.sqrt(0.2**2 + 0.4**2 + 0.6**2), rel=1e-12)


def test_vertex_colours_are_interpolated_barycentrically():
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(TRIANGLE), o3d.utility.Vector3iVector(FACES))
    colours = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mesh.vertex_colors = o3d.utility.Vector3dVector(colours)
    out = cast_down(GroundTruthRenderer(Scene("t", "t", [Part(mesh, None)])), POINTS)
    expected = np.array([np.array(barycentric(x, y)) @ colours for x, y in POINTS])
    assert torch.allclose(out["rgb"], torch.tensor(expected, dtype=torch.float32), atol=1e-5)
    assert torch.allclose(out["depth"], torch.ones(len(POINTS)), atol=1e-6)  # t to z = 0 along (0, 0, -1)


def test_texture_uvs_are_interpolated_barycentrically():
    size = 8
    centres = (np.arange(size) + 0.5) / size
    texture = np.zeros((size, size, 3))
    texture[..., 0] = centres[None, :]  # red = u (columns)
    texture[..., 1] = 1.0 - centres[:, None]  # green = v (row 0 is the top, v = 1)
    texture[..., 2] = 0.5
    uvs = np.array([[0.2, 0.2], [0.8, 0.2], [0.2, 0.8]])
    part = textured_part(TRIANGLE, FACES, uvs, texture)
    out = cast_down(GroundTruthRenderer(Scene("t", "t", [part])), POINTS)
    expected = np.array([np.array(barycentric(x, y)) @ uvs for x, y in POINTS])  # bilinear: exact on a linear ramp
    assert torch.allclose(out["rgb"][:, :2], torch.tensor(expected, dtype=torch.float32), atol=1e-5)
    assert torch.allclose(out["rgb"][:, 2], torch.full((len(POINTS),), 0.5))


def test_missed_rays_take_the_given_background_and_zero_depth_mask_and_normals():
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(TRIANGLE), o3d.utility.Vector3iVector(FACES))
    out = cast_down(GroundTruthRenderer(Scene("t", "t", [Part(mesh, (0.2, 0.4, 0.6))])), [(0.5, 0.5), (-0.5, -0.5)], background=0.25)
    assert torch.allclose(out["rgb"][0], torch.full((3,), 0.25)) and torch.allclose(out["rgb"][1], torch.tensor([0.2, 0.4, 0.6]))
    assert out["mask"].tolist() == [0.0, 1.0] and out["depth"][0] == 0.0
    assert torch.equal(out["normals"][0], torch.zeros(3)) and abs(float(out["normals"][1, 2])) == pytest.approx(1.0, abs=1e-6)


def test_non_square_render_matches_the_quadratic_formula_per_pixel():
    radius, centre = 0.4, np.array([0.3, 0.1, 0.0])
    scene = Scene("ball", "a ball", [Part(shapes.sphere(radius, center=tuple(centre), resolution=200), (0.2, 0.4, 0.6))])
    full = lambda v: torch.tensor([float(v)], dtype=torch.float64)  # noqa: E731
    cams = make_cameras(full(3.0), full(90.0), full(0.0), full(30.0))  # at +z: right +x, up +y
    height, width = 9, 13
    truth = GroundTruthRenderer(scene).render(cams, height, width)
    assert truth.depth.shape == (1, height, width) and truth.rgb.shape == (1, height, width, 3)
    f = height / (2 * math.tan(math.radians(15.0)))
    origin = np.array([0.0, 0.0, 3.0])
    checked = 0
    for py in range(height):
        for px in range(width):
            d = np.array([(px + 0.5 - width / 2) / f, -(py + 0.5 - height / 2) / f, -1.0])
            oc = origin - centre
            a, b, c = d @ d, 2 * d @ oc, oc @ oc - radius**2
            disc = b * b - 4 * a * c
            if abs(disc) < 0.005 * b * b:  # grazing the rim: the polyhedron may differ
                continue
            checked += 1
            hit = disc > 0
            assert bool(truth.mask[0, py, px]) == hit, (py, px)
            if hit:
                t = (-b - math.sqrt(disc)) / (2 * a)  # planar depth: the hit lies at z = 3 - t
                assert float(truth.depth[0, py, px]) == pytest.approx(t, abs=3e-3)
            else:
                assert float(truth.depth[0, py, px]) == 0.0
    assert checked > 80 and int(truth.mask.sum()) > 10
    # The ball sits right of and above the centre: more hits in the right half and the top half.
    assert truth.mask[0, :, width // 2 + 1 :].sum() > truth.mask[0, :, : width // 2].sum()
    assert truth.mask[0, : height // 2].sum() > truth.mask[0, height // 2 + 1 :].sum()
