"""Ground-truth scenes: catalogue, ray-cast truth, user meshes."""

import numpy as np
import open3d as o3d
import pytest
import torch

from hifa.cameras import orbit_cameras, sample_cameras, CameraSamplingConfig
from hifa.errors import HifaError
from hifa.scenes import CATALOGUE, GroundTruthRenderer, Part, Scene, get_scene, scene_from_mesh_file
from hifa.scenes import shapes


def sphere_scene(radius=0.4):
    return Scene("ball", "a ball", [Part(shapes.sphere(radius, resolution=200), (0.2, 0.4, 0.6))])


def test_sphere_depth_equals_the_analytic_planar_distance():
    radius = 0.4
    cams = sample_cameras(3, CameraSamplingConfig(), torch.Generator().manual_seed(0))
    truth = GroundTruthRenderer(sphere_scene(radius)).render(cams, 48, 48)
    origins, dirs = cams.rays(48, 48)
    o, d = origins.double(), dirs.double()
    a, b = (d * d).sum(-1), 2 * (o * d).sum(-1)
    c = (o * o).sum(-1) - radius**2
    disc = b * b - 4 * a * c
    t = (-b - torch.sqrt(disc.clamp(min=0))) / (2 * a)
    hit = truth.mask.reshape(3, -1) > 0.5
    assert hit.sum() > 500
    # The UV sphere is a polyhedron inscribed in the true sphere: depth can only be a little larger.
    err = truth.depth.reshape(3, -1)[hit].double() - t[hit]
    assert err.abs().max() < 2e-3
    # Only rays grazing the rim may disagree (the polyhedron is slightly smaller than the sphere).
    assert ((disc > 0) != hit).float().mean() < 0.01
    assert torch.all(truth.depth.reshape(3, -1)[~hit] == 0)


def test_albedo_mask_and_normals_of_a_sphere():
    truth = GroundTruthRenderer(sphere_scene()).render(orbit_cameras(1, polar_deg=90), 32, 32, background=1.0)
    centre = truth.rgb[0, 16, 16]
    assert torch.allclose(centre, torch.tensor([0.2, 0.4, 0.6]), atol=1e-5)
    assert torch.allclose(truth.rgb[0, 0, 0], torch.ones(3))
    assert truth.mask[0, 16, 16] == 1 and truth.mask[0, 0, 0] == 0
    # The front camera sits on +z: the centre pixel sees the normal (0, 0, 1).
    assert torch.allclose(truth.normals[0, 16, 16], torch.tensor([0.0, 0.0, 1.0]), atol=0.05)


def test_catalogue_scenes_are_valid():
    assert len(CATALOGUE) >= 5
    names = [s.name for s in CATALOGUE]
    prompts = [s.prompt for s in CATALOGUE]
    assert len(set(names)) == len(names) and len(set(prompts)) == len(prompts)
    for spec in CATALOGUE:
        scene = spec.scene()
        lo, hi = scene.bounds()
        assert np.all(lo > -0.6) and np.all(hi < 0.6), spec.name  # inside the evaluation view
        assert all(p.mesh.is_watertight() for p in scene.parts), spec.name
        assert all(p.color is not None for p in scene.parts), spec.name


def test_scene_lookup_by_name_and_prompt():
    assert get_scene("snowman").name == "snowman"
    assert get_scene("A Red Ball on a Blue Box").name == "red-ball-on-blue-box"


def test_unknown_scene_is_a_clear_error():
    with pytest.raises(HifaError, match="unknown scene 'unicorn'.*snowman"):
        get_scene("unicorn")


def test_surface_points_skip_faces_hidden_inside_other_parts():
    a = Part(shapes.sphere(0.3, resolution=64), (1, 0, 0))
    b = Part(shapes.sphere(0.3, center=(0.3, 0, 0), resolution=64), (0, 1, 0))
    points = Scene("pair", "two balls", [a, b]).surface_points(20000)
    inside_a = np.linalg.norm(points, axis=1) < 0.3 - 1e-3
    inside_b = np.linalg.norm(points - [0.3, 0, 0], axis=1) < 0.3 - 1e-3
    assert not inside_a.any() and not inside_b.any()
    assert len(points) < 20000


def test_lathe_makes_a_watertight_mug_with_a_cavity():
    profile = [(0.0, -0.2), (0.2, -0.2), (0.2, 0.2), (0.15, 0.2), (0.15, -0.15), (0.0, -0.15)]
    mug = shapes.lathe(profile)
    assert mug.is_watertight() and shapes.signed_volume(mug) > 0
    import math

    expected = math.pi * (0.2**2 * 0.4 - 0.15**2 * 0.35)
    assert shapes.signed_volume(mug) == pytest.approx(expected, rel=0.01)


def test_user_mesh_becomes_a_scene(tmp_path):
    mesh = o3d.geometry.TriangleMesh.create_box(2.0, 1.0, 1.0)
    mesh.translate((5.0, 5.0, 5.0))
    path = tmp_path / "my_box.ply"
    o3d.io.write_triangle_mesh(str(path), mesh)
    scene = get_scene(str(path))
    assert scene.name == "my-box" and scene.prompt == "my box"
    lo, hi = scene.bounds()
    assert np.allclose((lo + hi) / 2, 0, atol=1e-9)
    radius = np.linalg.norm(np.asarray(scene.parts[0].mesh.vertices), axis=1).max()
    assert radius == pytest.approx(0.5)
    truth = GroundTruthRenderer(scene).render(orbit_cameras(1), 16, 16)
    assert truth.mask.sum() > 0


def test_unreadable_mesh_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.ply"
    bad.write_text("this is not a mesh")
    with pytest.raises(HifaError, match="cannot read mesh file"):
        scene_from_mesh_file(bad)
    with pytest.raises(HifaError, match="mesh file not found"):
        scene_from_mesh_file(tmp_path / "missing.obj")
