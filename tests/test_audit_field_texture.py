"""Texture baking and OBJ text: unit normals at texels, clipped colours, filled gaps, 1-based indices, uncovered cells."""

import numpy as np
import pytest

from hifa.texture import TexturedMesh, bake_cells, bake_texture, obj_text

SQUARE_UV = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
SQUARE_FACES = np.array([[0, 1, 2], [0, 2, 3]])
FLAT = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])


def test_the_colour_sees_unit_normals_between_diverging_vertex_normals():
    s = np.sqrt(0.5)
    normals = np.array([[-s, 0.0, s], [s, 0.0, s], [s, 0.0, s], [-s, 0.0, s]])  # the middle of the square averages to (0, 0, s)
    seen = []

    def colour(points, normal):
        seen.append(normal)
        return np.full((len(points), 3), 0.5)

    bake_texture(colour, FLAT, normals, SQUARE_FACES, SQUARE_UV, 16)
    normal = seen[0]
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-12)
    assert (normal[:, 1] == 0).all() and (normal[:, 2] > 0).all()


def test_baked_colours_are_clipped_to_the_unit_range():
    def colour(points, normal):
        return np.stack([points[:, 0] * 4 - 2, np.full(len(points), 1.5), np.full(len(points), -0.25)], -1)

    texture, _ = bake_texture(colour, FLAT, np.tile([0.0, 0.0, 1.0], (4, 1)), SQUARE_FACES, SQUARE_UV, 8)
    assert texture.min() == 0.0 and texture.max() == 1.0
    assert (texture[..., 1] == 1.0).all() and (texture[..., 2] == 0.0).all()


def test_texels_outside_every_chart_take_the_nearest_baked_colour():
    size = 12
    uv = SQUARE_UV[[0, 1, 3]]  # the lower-left half: texel centres with u + v <= 1
    texture, coverage = bake_texture(lambda p, n: np.tile([0.2, 0.4, 0.6], (len(p), 1)), FLAT[[0, 1, 3]],
                                     np.tile([0.0, 0.0, 1.0], (3, 1)), np.array([[0, 1, 2]]), uv, size)
    assert coverage == pytest.approx(size * (size + 1) / 2 / size**2)
    np.testing.assert_allclose(texture, np.broadcast_to([0.2, 0.4, 0.6], (size, size, 3)))


def test_obj_text_indexes_from_one_and_writes_uvs_as_given():
    mesh = TexturedMesh(FLAT[:3], np.array([[0, 1, 2]]), np.array([[0.0, 0.0], [1.0, 0.25], [0.5, 1.0]]),
                        np.tile([0.0, 0.0, 1.0], (3, 1)), np.zeros((2, 2, 3)))
    lines = obj_text(mesh, "m.mtl").splitlines()
    assert lines[:2] == ["mtllib m.mtl", "usemtl albedo"]
    assert [line for line in lines if line.startswith("vt ")] == ["vt 0.000000 0.000000", "vt 1.000000 0.250000", "vt 0.500000 1.000000"]
    assert lines[-1] == "f 1/1/1 2/2/2 3/3/3"


def test_per_triangle_coverage_counts_only_the_cells_of_faces():
    """3 faces on 8 x 8 texels: 2 x 2 cells of 4 x 4 texels, one cell unused: 48 of 64 texels covered."""
    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3]])
    texture, coverage = bake_cells(lambda p, n: np.clip(p, 0, 1), vertices, np.tile([0.0, 0.0, 1.0], (4, 1)), faces, 8)
    assert coverage == 48 / 64
    np.testing.assert_allclose(texture[0, 0], vertices[faces[0]].mean(0))
    np.testing.assert_allclose(texture[0, 4], vertices[faces[1]].mean(0))
    np.testing.assert_allclose(texture[4, 0], vertices[faces[2]].mean(0))
