"""Audit of `hifa reconstruct` (config checks, the photometric fit, view scores, metrics.json and its files), the
UV atlas (per-triangle layout, child-process fall-throughs) and the image, geometry and mesh-view metrics.

torch and the reconstruction are imported inside the tests: the atlas makers below run in child processes
that import this module, and each of those should start in well under a second.
"""

import csv
import math
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from hifa.errors import ConfigError, HifaError
from hifa.uv_atlas import ChildFailed, cell_layout, in_child, triangle_charts, uv_atlas

TETRA = (np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]), np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))


def reversed_charts(vertices, faces, size):
    """An atlas that turns every face around: not the mesh it was given."""
    return np.arange(len(vertices)), np.asarray(faces)[:, ::-1], np.full((len(vertices), 2), 0.5), 1


def wide_charts(vertices, faces, size):
    """An atlas that keeps the faces but puts some UVs outside [0, 1]."""
    return np.arange(len(vertices)), np.asarray(faces), np.asarray(vertices)[:, :2] * 2.0 - 0.5, 2


def silent_charts(vertices, faces, size):
    """A child that exits with status 0 and writes nothing."""
    sys.exit(0)


def sleepy_charts(vertices, faces, size):
    time.sleep(60)


def wordy_charts(vertices, faces, size):
    raise ImportError("missing " + "x" * 1000)


def test_per_triangle_charts_inset_each_face_half_a_texel_in_its_own_cell():
    """4 faces on 8² texels: 2 x 2 cells of 4 texels, face i a right triangle between texel centres of cell i, row 0 at v = 1."""
    faces = np.array([[0, 1, 2], [2, 1, 3], [3, 4, 5], [5, 4, 0]])
    source, new_faces, uvs, charts = triangle_charts(faces, 8)
    assert charts == 4 and np.array_equal(source, faces.reshape(-1)) and np.array_equal(new_faces, np.arange(12).reshape(4, 3))
    expected = np.array([
        [[0.5, 3.5], [3.5, 3.5], [0.5, 0.5]], [[4.5, 3.5], [7.5, 3.5], [4.5, 0.5]],
        [[0.5, 7.5], [3.5, 7.5], [0.5, 4.5]], [[4.5, 7.5], [7.5, 7.5], [4.5, 4.5]],
    ])  # (x, y) in texels, image y down
    assert np.allclose(uvs.reshape(4, 3, 2), np.stack([expected[..., 0] / 8, 1 - expected[..., 1] / 8], -1))


def test_cell_layout_rounds_the_grid_up_and_needs_a_texel_per_cell():
    """ceil(sqrt(F)) cells a side, S // that texels each; fewer texels than cells is an error naming the size needed."""
    assert cell_layout(5, 8) == (3, 2) and cell_layout(9, 3) == (3, 1) and cell_layout(1, 4) == (1, 4)
    with pytest.raises(HifaError, match="at least 4"):
        cell_layout(10, 3)


def test_an_atlas_that_changes_the_faces_is_not_used(caplog):
    """A maker whose faces are not the mesh's own falls through to one cell per triangle."""
    vertices, faces = TETRA
    with caplog.at_level("WARNING", logger="hifa.uv_atlas"):
        atlas = uv_atlas(vertices, faces, 16, makers=(reversed_charts,))
    assert atlas.method == "per-triangle" and atlas.charts == 4 and "reversed changed the mesh's faces" in caplog.text


def test_an_atlas_s_uvs_are_clipped_to_the_unit_square():
    """UVs a library puts outside [0, 1] come back clipped, the rest unchanged."""
    vertices, faces = TETRA
    atlas = uv_atlas(vertices, faces, 16, makers=(wide_charts,))
    assert atlas.method == "wide" and atlas.charts == 2
    assert np.array_equal(atlas.uvs, np.clip(vertices[:, :2] * 2.0 - 0.5, 0.0, 1.0))
    assert atlas.uvs.min() == 0 and atlas.uvs.max() == 1


def test_a_child_that_exits_cleanly_without_charts_counts_as_failed(caplog):
    """Exit status 0 with no charts file is a failure: the next maker is tried."""
    vertices, faces = TETRA
    with caplog.at_level("WARNING", logger="hifa.uv_atlas"):
        atlas = uv_atlas(vertices, faces, 16, makers=(silent_charts, wide_charts))
    assert atlas.method == "wide" and "silent failed on this mesh (exit status 0); trying the next atlas" in caplog.text


def test_a_hung_child_is_a_child_failure():
    """A maker that outlives the timeout raises ChildFailed (not a library that is missing)."""
    vertices, faces = TETRA
    with pytest.raises(ChildFailed, match="no atlas after 1 s") as info:
        in_child(sleepy_charts, vertices, faces, 16, timeout=1.0)
    assert not info.value.unavailable


def test_a_missing_library_s_message_is_clipped_to_one_short_line():
    """An ImportError marks the library unavailable; its message is cut to 200 characters."""
    vertices, faces = TETRA
    with pytest.raises(ChildFailed) as info:
        in_child(wordy_charts, vertices, faces, 16)
    assert info.value.unavailable and str(info.value).startswith("ImportError: missing xxx") and len(str(info.value)) == 200


@pytest.mark.parametrize("field, value", [
    ("seed", 2**63), ("eval_views", 0), ("eval_resolution", 7), ("batch_rays", 0), ("steps", 0), ("train_views", 0),
    ("lr", 0.0), ("time_budget_s", 0.0), ("resolution", 7),
])
def test_reconstruct_config_refuses_values_out_of_range(field, value):
    """Each setting outside its range is a config error naming it; the edges just inside are accepted."""
    from hifa.reconstruct import ReconstructConfig

    with pytest.raises(ConfigError) as info:
        ReconstructConfig(**{field: value})
    assert info.value.key == field
    ReconstructConfig(seed=2**63 - 1, eval_views=1, eval_resolution=8, batch_rays=1, steps=1, train_views=1, resolution=8,
                      time_budget_s=None)


class FixedRenderer:
    """Renders `colour` for every ray, or the ray's background when colour is None; plus `offset`."""

    def __init__(self, colour=None, offset=0.0):
        import torch

        self.colour, self.offset = colour, offset
        self.weight = torch.zeros(1, requires_grad=True)
        self.field = SimpleNamespace(config=SimpleNamespace(view_dependent_rate=0.5))

    def parameters(self):
        return [self.weight]

    def __call__(self, origins, directions, options):
        base = options.background if self.colour is None else self.colour.expand(len(origins), 3)
        return {"image": base + self.offset + 0.0 * self.weight}


def bank(mask_value, count=32):
    import torch

    from hifa.reconstruct import RayBank

    mask = torch.full((count,), float(mask_value))
    return RayBank(torch.zeros(count, 3), torch.ones(count, 3), torch.full((count, 3), 0.25), mask)


def fit_history(renderer, mask_value, **settings):
    from hifa.reconstruct import ReconstructConfig, fit

    config = ReconstructConfig(**{"steps": 4, "time_budget_s": None, "batch_rays": 16, **settings})
    return fit(renderer, bank(mask_value), config, progress=False)


def test_fit_targets_the_colour_on_the_mask_and_the_background_off_it():
    """Target = rgb where mask, the random background elsewhere; PSNR = -10 log10(loss), 100 dB at loss 0."""
    import torch

    on = fit_history(FixedRenderer(colour=torch.full((1, 3), 0.25)), 1.0)
    assert [h["step"] for h in on] == [1, 2, 3, 4] and all(h["loss"] == 0.0 and h["psnr"] == pytest.approx(100.0) for h in on)
    off = fit_history(FixedRenderer(), 0.0)
    assert all(h["loss"] == 0.0 for h in off)
    shifted = fit_history(FixedRenderer(offset=0.1), 0.0)
    assert all(h["loss"] == pytest.approx(0.01, rel=1e-5) and h["psnr"] == pytest.approx(20.0, abs=1e-4) for h in shifted)


def test_fit_stops_once_the_time_budget_is_spent():
    """A budget already spent after the first step stops there; a generous one runs every step."""
    assert len(fit_history(FixedRenderer(), 0.0, time_budget_s=1e-9)) == 1
    assert len(fit_history(FixedRenderer(), 0.0, time_budget_s=1e6)) == 4


def test_evaluate_views_scores_on_white_against_the_truth_mask():
    """Renders and truth both on white; depth error on the truth mask, IoU of O > 0.5 with it, PSNR per view and overall."""
    import torch

    from hifa.reconstruct import evaluate_views

    mask = torch.zeros(2, 4, 4)
    mask[:, :, :2] = 1.0  # left half: 8 pixels a view
    opacity = torch.zeros(2, 4, 4)
    opacity[:, :2, :] = 0.9  # top half, 4 of them shared
    truth = SimpleNamespace(rgb=torch.full((2, 4, 4, 3), 0.5), depth=2.0 * mask, mask=mask)
    depth = torch.where(mask > 0.5, 2.2, 7.0)
    image = truth.rgb + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)
    seen = {}

    class Truth:
        def render(self, cameras, height, width, background):
            seen["truth"] = (height, width, background)
            return truth

    class Renders:
        def render_views(self, cameras, height, width, options):
            seen["render"] = (height, width, options.background)
            return {"image": image, "depth": depth, "opacity": opacity}

    metrics, images = evaluate_views(Renders(), Truth(), None, 4)
    assert seen["truth"] == (4, 4, 1.0) and seen["render"][:2] == (4, 4) and torch.equal(seen["render"][2], torch.ones(3))
    assert metrics["mask_iou"] == pytest.approx(4 / 12) and metrics["depth_mae"] == pytest.approx(0.2, rel=1e-5)
    assert metrics["psnr_per_view"] == pytest.approx([20.0, 40.0], abs=1e-3)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(1 / ((0.01 + 0.0001) / 2)), abs=1e-3)
    assert images["truth"] is truth


@pytest.fixture(scope="module")
def reconstructed(tmp_path_factory):
    """A tiny reconstruction of the mug whose time budget ends it after one of its three steps."""
    from hifa.encoding import HashGridConfig
    from hifa.field import FieldConfig
    from hifa.mesh import MeshConfig
    from hifa.reconstruct import ReconstructConfig, reconstruct
    from hifa.renderer import RendererConfig

    config = ReconstructConfig(
        steps=3, time_budget_s=1e-9, batch_rays=64, train_views=2, resolution=8, eval_views=2, eval_resolution=8,
        surface_points=500,
        field=FieldConfig(grid=HashGridConfig(n_levels=4, log2_hashmap_size=12, finest_resolution=64)),
        renderer=RendererConfig(num_coarse=8, num_fine=4), mesh=MeshConfig(resolution=24, coarse_resolution=16, texture_size=64),
    )
    out = tmp_path_factory.mktemp("reconstruct")
    metrics = reconstruct("mug", config, out, progress=False)
    return metrics, out


def test_reconstruct_metrics_count_the_steps_run_and_scale_by_the_extent(reconstructed):
    """steps are those run (the budget stopped it), tau and the Chamfer fraction use the scene's extent."""
    from hifa.scenes import get_scene

    metrics, out = reconstructed
    extent = get_scene("mug").extent()
    assert metrics["steps"] == 1 and metrics["extent"] == pytest.approx(extent)
    assert metrics["fscore_tau"] == pytest.approx(0.01 * extent)
    assert metrics["chamfer_fraction_of_extent"] == pytest.approx(metrics["chamfer"] / extent)


def test_reconstruct_train_log_is_one_row_per_step_with_its_psnr(reconstructed):
    """train_log.csv: step, loss, psnr, time_s per step run; psnr = -10 log10(loss); the last loss is train_loss."""
    metrics, out = reconstructed
    with open(out / "train_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "loss", "psnr", "time_s"] and [r["step"] for r in rows] == ["1"]
    loss = float(rows[0]["loss"])
    assert loss == pytest.approx(metrics["train_loss"], rel=1e-5)
    assert float(rows[0]["psnr"]) == pytest.approx(-10 * math.log10(loss), abs=1e-3)


def test_reconstruct_mesh_faces_are_the_exported_mesh_s(reconstructed):
    """mesh_faces is the face count of mesh.ply as written."""
    import trimesh

    metrics, out = reconstructed
    assert metrics["mesh_faces"] == len(trimesh.load(out / "mesh.ply", process=False).faces) > 0


def test_reconstruct_scores_the_held_out_orbit_halfway_between_training_azimuths(reconstructed):
    """The truth row of the sheet is the mug at azimuths 90° and 270°; the render and mesh rows score as psnr and mesh_psnr."""
    import torch

    from hifa.cameras import orbit_cameras
    from hifa.evaluate.image import psnr
    from hifa.io import load_image
    from hifa.scenes import GroundTruthRenderer, get_scene

    metrics, out = reconstructed
    sheet = torch.from_numpy(load_image(out / "comparison.png"))
    assert sheet.shape == (4 * 8, 2 * 8, 3)
    truth_row, render_row, mesh_row = sheet[:8], sheet[8:16], sheet[24:]
    renderer = GroundTruthRenderer(get_scene("mug"))
    held_out = torch.cat(list(renderer.render(orbit_cameras(2, start_azimuth_deg=90.0), 8, 8, background=1.0).rgb), dim=1)
    front = torch.cat(list(renderer.render(orbit_cameras(2), 8, 8, background=1.0).rgb), dim=1)
    assert (truth_row - held_out).abs().max() <= 0.6 / 255 and (truth_row - front).abs().max() > 0.1
    assert psnr(render_row, truth_row) == pytest.approx(metrics["psnr"], abs=0.05)
    assert psnr(mesh_row, truth_row) == pytest.approx(metrics["mesh_psnr"], abs=0.05)


def test_ssim_needs_full_windows_and_equal_shapes():
    """An 11 x 11 image is one full window; 10 pixels is too small; a channel count that differs is refused."""
    import torch

    from hifa.evaluate.image import ssim

    image = torch.rand(11, 11, 3, generator=torch.Generator().manual_seed(0))
    assert ssim(image, image) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(image[:10], image[:10])
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.rand(16, 16, 1), torch.rand(16, 16, 3))


def test_ssim_is_the_same_for_images_scaled_with_their_max_value():
    """SSIM of 8-bit-scaled images with max_value 255 equals SSIM of the [0, 1] images: both constants scale."""
    import torch

    from hifa.evaluate.image import ssim

    gen = torch.Generator().manual_seed(1)
    a = torch.rand(1, 16, 16, 3, generator=gen)
    b = (a + 0.2 * torch.rand(a.shape, generator=gen)).clamp(0, 1)
    assert ssim(255 * a, 255 * b, max_value=255.0) == pytest.approx(ssim(a, b), abs=1e-9)


def test_a_point_exactly_tau_away_is_not_within_tau():
    """Precision and recall count distances strictly below tau (as the brute-force reference does)."""
    from hifa.evaluate.geometry import compare_points

    pred, ref = np.array([[0.0, 0.0, 0.0]]), np.array([[0.5, 0.0, 0.0]])
    at = compare_points(pred, ref, tau=0.5)
    assert (at.precision, at.recall, at.fscore) == (0.0, 0.0, 0.0)
    assert compare_points(pred, ref, tau=0.500001).fscore == 1.0


def test_surface_samples_follow_their_seed():
    """The same seed draws the same points, another seed others."""
    import trimesh

    from hifa.evaluate.geometry import sample_mesh_surface

    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    first, again = (sample_mesh_surface(box.vertices, box.faces, 200, seed=3) for _ in range(2))
    assert np.array_equal(first, again) and not np.allclose(first, sample_mesh_surface(box.vertices, box.faces, 200, seed=4))


def two_colour_sphere():
    """A sphere red where x > 0, blue where x < 0 (one texel column each)."""
    import trimesh

    from hifa.texture import TexturedMesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    vertices = np.asarray(sphere.vertices)
    uvs = np.where(vertices[:, :1] > 0, [[0.25, 0.5]], [[0.75, 0.5]])
    texture = np.zeros((2, 2, 3))
    texture[:, 0, 0], texture[:, 1, 2] = 1.0, 1.0
    return TexturedMesh(vertices, np.asarray(sphere.faces), uvs, np.asarray(sphere.vertex_normals), texture)


def test_textured_views_are_seen_from_each_camera_at_the_asked_size():
    """From +x the red half, from -x the blue half; height and width as asked."""
    from hifa.cameras import orbit_cameras
    from hifa.evaluate.mesh_views import render_textured

    views = render_textured(two_colour_sphere(), orbit_cameras(2, polar_deg=90.0, start_azimuth_deg=90.0, fovy_deg=30.0), 12, 20)
    assert views.shape == (2, 12, 20, 3)
    assert (views[0, 6, 10] == [255, 0, 0]).all() and (views[1, 6, 10] == [0, 0, 255]).all()
