"""UV-textured meshes: rasterising the atlas, baking, filling, sampling, exports and the head-on colour."""

import logging

import numpy as np
import pytest
import torch
import trimesh

from hifa.errors import HifaError
from hifa.mesh import surface_albedo
from hifa.scenes import GroundTruthRenderer, Scene, textured_part
from hifa.cameras import orbit_cameras
from hifa.texture import bake_texture, export_textured, fill_empty, load_textured, rasterize_uv, sample_texture, texture_mesh
from hifa.uv_atlas import atlas_order, uv_atlas, uvatlas_charts, xatlas_charts

SQUARE_UV = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
SQUARE_FACES = np.array([[0, 1, 2], [0, 2, 3]])


def texel_centres(size):
    """(S, S, 2) UV of each texel centre in the OBJ convention (row 0 at v = 1)."""
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    return np.stack([(cols + 0.5) / size, 1.0 - (rows + 0.5) / size], axis=-1)


@pytest.mark.parametrize("chunk", [7, 1 << 22])
def test_two_triangles_over_the_square_cover_every_texel_once_with_exact_barycentrics(chunk):
    size = 32
    face_id, bary = rasterize_uv(SQUARE_UV, SQUARE_FACES, size, chunk=chunk)
    assert (face_id >= 0).all()
    assert np.allclose(bary.sum(-1), 1.0) and (bary >= -1e-9).all()
    # Each texel's barycentric coordinates rebuild its own centre from its face's corner UVs.
    rebuilt = np.einsum("hwk,hwkc->hwc", bary, SQUARE_UV[SQUARE_FACES[face_id]])
    assert np.allclose(rebuilt, texel_centres(size), atol=1e-12)
    # Below the diagonal u = v (v < u) lies face 0, above it face 1.
    centres = texel_centres(size)
    off_diagonal = np.abs(centres[..., 0] - centres[..., 1]) > 1e-9
    assert (face_id[off_diagonal] == np.where(centres[..., 1] < centres[..., 0], 0, 1)[off_diagonal]).all()


def test_a_half_triangle_covers_the_texels_whose_centres_it_holds():
    size = 40
    face_id, _ = rasterize_uv(SQUARE_UV[[0, 1, 3]], np.array([[0, 1, 2]]), size)
    centres = texel_centres(size)
    inside = centres.sum(-1) <= 1.0
    assert ((face_id == 0) == inside).all() and inside.sum() == size * (size + 1) // 2
    # A face that is a line in UV space covers nothing.
    assert (rasterize_uv(np.array([[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]), np.array([[0, 1, 2]]), size)[0] == -1).all()


def test_sampling_at_texel_centres_returns_the_texels_and_follows_the_obj_convention():
    rng = np.random.default_rng(0)
    texture = rng.random((8, 8, 3))
    centres = texel_centres(8).reshape(-1, 2)
    assert np.allclose(sample_texture(texture, centres), texture.reshape(-1, 3))
    top_left = sample_texture(texture, np.array([[0.0, 1.0]]))  # u = 0, v = 1: the image's first row, first column
    assert np.allclose(top_left, texture[0, 0])
    # Halfway between two texel centres of a row: their mean.
    assert np.allclose(sample_texture(texture, np.array([[1.0 / 8, 1.0 - 0.5 / 8]])), (texture[0, 0] + texture[0, 1]) / 2)


def test_empty_texels_take_the_nearest_covered_colour():
    image = np.zeros((5, 5, 3))
    covered = np.zeros((5, 5), bool)
    image[0, 0], covered[0, 0] = (1.0, 0.0, 0.0), True
    image[4, 4], covered[4, 4] = (0.0, 0.0, 1.0), True
    filled = fill_empty(image, covered)
    assert np.allclose(filled[1, 0], (1, 0, 0)) and np.allclose(filled[3, 4], (0, 0, 1)) and np.allclose(filled[4, 3], (0, 0, 1))
    assert np.allclose(filled[0, 0], (1, 0, 0)) and np.allclose(filled[4, 4], (0, 0, 1))


def test_baking_a_linear_colour_is_exact_at_every_covered_texel():
    # A flat square in z = 0.3 whose UVs are its x, y: each texel's surface point is (u, v, 0.3).
    vertices = np.array([[0.0, 0.0, 0.3], [1.0, 0.0, 0.3], [1.0, 1.0, 0.3], [0.0, 1.0, 0.3]])
    normals = np.tile([0.0, 0.0, 1.0], (4, 1))
    seen = []

    def colour(points, normal):
        seen.append(normal)
        return np.stack([points[:, 0], points[:, 1], points[:, 2]], -1)

    texture, coverage = bake_texture(colour, vertices, normals, SQUARE_FACES, SQUARE_UV, 16)
    centres = texel_centres(16)
    assert coverage == 1.0 and np.allclose(seen[0], [0, 0, 1])
    assert np.allclose(texture[..., :2], centres, atol=1e-12) and np.allclose(texture[..., 2], 0.3)


NON_MANIFOLD = (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], float), np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]]))


def crash(vertices, faces, size):
    """What UVAtlas does on a non-manifold edge and xatlas on some meshes: the process dies."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def assert_same_triangles(atlas, vertices, faces):
    assert np.allclose(vertices[atlas.source][atlas.faces], vertices[faces])
    assert atlas.uvs.shape == (len(atlas.source), 2) and (atlas.uvs >= 0).all() and (atlas.uvs <= 1).all()


def test_a_crashing_atlas_library_falls_through_to_the_next_and_then_to_one_cell_per_triangle(caplog):
    vertices, faces = NON_MANIFOLD
    with caplog.at_level(logging.WARNING, logger="hifa.uv_atlas"):
        atlas = uv_atlas(vertices, faces, 64, makers=(crash, xatlas_charts))
    assert atlas.method == "xatlas" and atlas.charts >= 2 and "crash failed on this mesh (exit status -11" in caplog.text
    assert_same_triangles(atlas, vertices, faces)
    fallback = uv_atlas(vertices, faces, 64, makers=(crash,))
    assert fallback.method == "per-triangle" and fallback.charts == 3
    assert_same_triangles(fallback, vertices, faces)
    # The fallback's cells do not overlap: each texel belongs to at most one face, and each face covers some.
    face_id, _ = rasterize_uv(fallback.uvs, fallback.faces, 64)
    assert set(np.unique(face_id)) == {-1, 0, 1, 2}
    with pytest.raises(HifaError, match="empty mesh"):
        uv_atlas(np.zeros((0, 3)), np.zeros((0, 3), int), 64)


def needs_a_missing_library(vertices, faces, size):
    import hifa_no_such_library  # noqa: F401


def test_a_missing_library_is_named_as_such_and_a_maker_must_be_importable(caplog):
    vertices, faces = NON_MANIFOLD
    with caplog.at_level(logging.WARNING, logger="hifa.uv_atlas"):
        atlas = uv_atlas(vertices, faces, 64, makers=(needs_a_missing_library, xatlas_charts))
    assert atlas.method == "xatlas"
    assert "needs_a_missing_library is not available (ModuleNotFoundError: No module named 'hifa_no_such_library')" in caplog.text

    def nested(vertices, faces, size):
        return xatlas_charts(vertices, faces, size)

    for maker in (nested, lambda v, f, s: None):
        with pytest.raises(TypeError, match="module-level function"):
            uv_atlas(vertices, faces, 64, makers=(maker,))


def test_the_one_cell_per_triangle_fallback_gives_every_face_its_own_colour(monkeypatch):
    import hifa.texture

    monkeypatch.setattr(hifa.texture, "atlas_order", lambda first: (crash,))
    sphere = trimesh.creation.icosphere(subdivisions=2)  # 320 faces: 18 x 18 cells of 3 texels at 64²
    vertices, faces = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    mesh = texture_mesh(position_colour, vertices, faces, np.asarray(sphere.vertex_normals), 64)
    assert mesh.atlas == "per-triangle" and mesh.charts == 320 and mesh.coverage == pytest.approx(320 * 9 / 64**2)
    # Anywhere inside a face's triangle, even bilinearly filtered, the texture holds that face's centroid colour.
    for weights in ((1 / 3, 1 / 3, 1 / 3), (0.8, 0.1, 0.1), (0.1, 0.1, 0.8)):
        uv = np.einsum("k,fkc->fc", np.array(weights), mesh.uvs[mesh.faces])
        assert np.allclose(sample_texture(mesh.texture, uv), position_colour(vertices[faces].mean(1), None))
    with pytest.raises(HifaError, match="fewer texels than the mesh has faces .*at least 18"):
        texture_mesh(position_colour, vertices, faces, np.asarray(sphere.vertex_normals), 16)


def test_the_default_atlas_charts_a_non_manifold_mesh_that_crashes_uvatlas():
    vertices, faces = NON_MANIFOLD
    atlas = uv_atlas(vertices, faces, 64)  # UVAtlas's child dies on the shared edge; xatlas charts it
    assert atlas.method == "xatlas"
    assert_same_triangles(atlas, vertices, faces)


def test_uvatlas_charts_a_closed_mesh_with_seams_split():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    vertices, faces = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    atlas = uv_atlas(vertices, faces, 128)
    assert atlas.method == "uvatlas" and atlas.charts >= 1 and len(atlas.source) > len(vertices)  # split along seams
    assert_same_triangles(atlas, vertices, faces)


def test_xatlas_first_gives_the_same_texture_on_every_run():
    # mesh.atlas=xatlas: the charts come from a fresh process each time, so equal results mean no unseeded draws.
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    args = (position_colour, np.asarray(sphere.vertices), np.asarray(sphere.faces), np.asarray(sphere.vertex_normals), 64)
    first, second = texture_mesh(*args, atlas_first="xatlas"), texture_mesh(*args, atlas_first="xatlas")
    assert first.atlas == second.atlas == "xatlas"
    for name in ("vertices", "faces", "uvs", "texture"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert atlas_order("xatlas") == (xatlas_charts, uvatlas_charts) and atlas_order("uvatlas") == (uvatlas_charts, xatlas_charts)


def position_colour(points, normals):
    return (points + 1.0) / 2.0


@pytest.fixture(scope="module")
def sphere_export(tmp_path_factory):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    mesh = texture_mesh(position_colour, np.asarray(sphere.vertices), np.asarray(sphere.faces), np.asarray(sphere.vertex_normals), 256)
    folder = tmp_path_factory.mktemp("textured")
    return mesh, folder, export_textured(mesh, folder)


def test_exports_round_trip_through_trimesh_with_the_baked_colours(sphere_export):
    mesh, folder, paths = sphere_export
    assert {p.name for p in paths.values()} == {"textured.glb", "textured.obj", "textured.mtl", "textured.png"}
    assert "map_Kd textured.png" in (folder / "textured.mtl").read_text()
    for name in ("textured.glb", "textured.obj"):
        loaded = trimesh.load(folder / name, force="mesh", process=False)
        assert len(loaded.faces) == len(mesh.faces)
        # trimesh samples the texture itself at each vertex's UV: the colour baked there.
        colours = loaded.visual.to_color().vertex_colors[:, :3] / 255.0
        assert np.abs(colours - position_colour(np.asarray(loaded.vertices), None)).max() < 0.03, name
    again = load_textured(folder / "textured.glb")
    assert np.allclose(again.vertices, mesh.vertices, atol=1e-6) and np.allclose(again.uvs, mesh.uvs, atol=1e-6)
    assert np.abs(again.texture - mesh.texture).max() <= 0.5 / 255 + 1e-9  # the texture went through 8 bits


def test_a_textured_part_renders_its_texture(sphere_export):
    mesh, folder, _ = sphere_export
    cams = orbit_cameras(3, polar_deg=70.0, radius=3.2, fovy_deg=40.0)
    out = GroundTruthRenderer(Scene("s", "s", [textured_part(mesh.vertices, mesh.faces, mesh.uvs, mesh.texture)])).render(cams, 48, 48, 1.0)
    origins, directions = cams.rays(48, 48)
    hit = out.mask.reshape(-1) > 0.5
    points = (origins.reshape(-1, 3) + out.depth.reshape(-1, 1) * directions.reshape(-1, 3))[hit].numpy()
    # Every hit shows the colour of the point it hit (within the texture's and the faceting's resolution).
    assert hit.sum() > 500 and np.abs(out.rgb.reshape(-1, 3)[hit].numpy() - position_colour(points, None)).mean() < 0.01
    assert (out.rgb.reshape(-1, 3)[~hit] == 1.0).all()


def test_a_damaged_textured_file_is_one_clear_error(tmp_path):
    (tmp_path / "bad.glb").write_bytes(b"glTF\x02\x00\x00\x00 not really")
    with pytest.raises(HifaError, match="cannot read the textured mesh .*run `hifa mesh` again"):
        load_textured(tmp_path / "bad.glb")


class ShellField(torch.nn.Module):
    """A ball of radius 0.5: a thin white halo (sigma 2) over a dense green core (sigma 200) below r = 0.47."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def density_features(self, points, exact=False):
        r = points.norm(dim=-1)
        sigma = torch.where(r < 0.47, 200.0, torch.where(r < 0.5, 2.0, 0.0))
        white, green = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.1, 0.8, 0.1])
        return sigma, torch.where((r < 0.47)[:, None], green, white)

    def albedo(self, feature, directions=None, rays=None, exact=False):
        return feature


def test_head_on_colour_sees_through_a_thin_halo_to_the_surface_below():
    field = ShellField()
    normals = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    points = 0.499 * normals  # on the iso-surface of the halo, where the albedo itself is white
    assert np.allclose(surface_albedo(field, points, normals, depth=0.0), 1.0)
    seen = surface_albedo(field, points, normals, depth=0.1)
    # The halo's 0.03 at sigma 2 lets ~94 % through; the core is opaque: about 94 % green, 6 % white.
    halo = 1 - np.exp(-2.0 * 0.03)
    expected = halo * 1.0 + (1 - halo) * np.array([0.1, 0.8, 0.1])
    assert np.allclose(seen, expected, atol=0.02)
    # A ray that meets no density keeps the albedo at the point.
    far = np.array([[0.0, 0.0, 0.9]])
    assert np.allclose(surface_albedo(field, far, np.array([[0.0, 0.0, 1.0]]), depth=0.1), 1.0)


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """multiprocessing's spawn would re-run such a script in the child; the atlas child is a plain `python -m`."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "bake.py"
    script.write_text(
        "import numpy as np, trimesh\n"
        "from hifa.uv_atlas import uv_atlas\n"
        "s = trimesh.creation.icosphere(subdivisions=1)\n"
        "print('atlas', uv_atlas(np.asarray(s.vertices), np.asarray(s.faces), 64).method)\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["atlas uvatlas"] and "failed" not in proc.stderr
