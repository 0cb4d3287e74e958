"""Mesh extraction: automatic threshold, sphere accuracy, clean-up, export."""

import numpy as np
import pytest
import torch
import trimesh

from hifa.encoding import HashGridConfig
from hifa.errors import ConfigError, HifaError
from hifa.field import FieldConfig, NeRFField
from hifa.mesh import Mesh, MeshConfig, clean_mesh, density_grid, export_mesh, extract_mesh, marching_cubes, otsu_threshold
from tests.field_twins import fitted_field, precision_twin

RADIUS = 0.43


def ball_density(points):
    # A smooth step from ~40 inside to 0 outside, about a tenth of a voxel wide.
    return 40.0 * torch.sigmoid((RADIUS - points.norm(dim=-1)) / 0.0005)


@pytest.mark.parametrize("threshold", [None, 20.0])
def test_sphere_radius_error_is_below_one_voxel(threshold):
    resolution = 64
    lo, hi = np.full(3, -1.0), np.full(3, 1.0)
    grid = density_grid(ball_density, lo, hi, resolution)
    level = otsu_threshold(grid) if threshold is None else threshold
    assert 0.5 < level < 39.5
    vertices, faces = marching_cubes(grid, level, lo, hi)
    voxel = 2.0 / (resolution - 1)
    radii = np.linalg.norm(vertices, axis=1)
    assert np.abs(radii - RADIUS).max() < voxel
    # Faces wind outward: the enclosed volume is positive, between the balls one voxel apart.
    volume = trimesh.Trimesh(vertices, faces).volume
    assert 4 / 3 * np.pi * (RADIUS - voxel) ** 3 < volume < 4 / 3 * np.pi * (RADIUS + voxel) ** 3
    if threshold == 20.0:  # half the density: the surface sits halfway, on the true sphere
        assert volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.03)


def test_otsu_splits_two_populations():
    values = np.concatenate([np.zeros(1000), np.full(300, 50.0)])
    assert 0.0 < otsu_threshold(values) < 50.0


def test_no_surface_is_a_clear_error():
    with pytest.raises(HifaError, match="no surface at density threshold"):
        marching_cubes(np.zeros((8, 8, 8), np.float32), 1.0, np.full(3, -1.0), np.full(3, 1.0))


def test_clean_up_drops_small_components_and_decimates():
    big = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    small = trimesh.creation.icosphere(subdivisions=1, radius=0.05)
    small.apply_translation((0.8, 0, 0))
    both = trimesh.util.concatenate([big, small])
    vertices, faces = clean_mesh(both.vertices, both.faces, min_component_fraction=0.1, max_faces=1000)
    assert len(faces) <= 1000
    assert np.linalg.norm(vertices, axis=1).max() < 0.6


def test_extract_mesh_from_a_field_with_auto_bounds(caplog):
    field = NeRFField(FieldConfig(grid=HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4, finest_resolution=8)))
    field.density = lambda points, exact=False: ball_density(points)  # type: ignore[method-assign]
    with caplog.at_level("INFO", logger="hifa.mesh"):
        mesh = extract_mesh(field, MeshConfig(resolution=96, max_faces=5000))
    assert "automatic density threshold" in caplog.text
    assert len(mesh.faces) <= 5000 and mesh.colors.shape == (len(mesh.vertices), 3)
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - RADIUS).max() < 2 / 95


def test_a_bf16_field_gives_the_mesh_of_its_fp32_twin():
    """Extraction runs the MLPs in fp32 whatever field.mlp_precision: the asset does not depend on the training precision."""
    config = FieldConfig(grid=HashGridConfig(n_levels=4, log2_hashmap_size=12, finest_resolution=64), blob_radius=0.6, mlp_precision="fp32")
    exact = fitted_field(config, 1.0)
    fast = precision_twin(exact, "bf16")
    points = torch.rand(2048, 3) * 1.2 - 0.6
    assert not torch.equal(fast.density(points), exact.density(points))  # the bf16 path differs ...
    mesh_config = MeshConfig(resolution=48, threshold=5.0, max_faces=4000)
    a, b = extract_mesh(exact, mesh_config), extract_mesh(fast, mesh_config)
    assert len(a.faces) > 100
    np.testing.assert_array_equal(b.vertices, a.vertices)  # ... the mesh does not
    np.testing.assert_array_equal(b.colors, a.colors)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_export_round_trips_with_colours(tmp_path, suffix):
    sphere = trimesh.creation.icosphere(subdivisions=2)
    colors = np.tile([[1.0, 0.0, 0.0]], (len(sphere.vertices), 1))
    path = export_mesh(Mesh(sphere.vertices, sphere.faces, colors), tmp_path / f"m{suffix}")
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.faces) == len(sphere.faces)
    visual = loaded.visual if hasattr(loaded.visual, "vertex_colors") else loaded.visual.to_color()
    assert np.all(visual.vertex_colors[:, 0] == 255) and np.all(visual.vertex_colors[:, 1] == 0)
    assert not list(tmp_path.glob(".*tmp*"))


def test_export_rejects_unknown_formats(tmp_path):
    with pytest.raises(HifaError, match="cannot export"):
        export_mesh(Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]])), tmp_path / "m.fbx")


def test_bad_mesh_config_names_the_key():
    with pytest.raises(ConfigError, match="mesh.resolution"):
        MeshConfig(resolution=0)
