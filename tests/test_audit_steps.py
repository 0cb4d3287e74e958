"""Audit of the per-run steps (hifa.steps.render, depth, mesh, evaluate) on an untrained run folder: options,
cameras, the files and records each step writes, and the evaluate step's flattening of its numbers."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from hifa.cameras import orbit_cameras
from hifa.configio import dump_yaml
from hifa.errors import ConfigError, HifaError
from hifa.io import finite
from hifa.run_folder import write_weights
from hifa.run_setup import build_renderer
from hifa.steps.depth import disparity_image, estimate_depth, run_estimator
from hifa.steps.evaluate import EvaluateOptions, depth_summary, evaluate_run, mesh_inputs, metric_items
from hifa.steps.mesh import MeshOptions, colour_note, mesh_run, preview
from hifa.steps.render import RenderOptions, light_direction, marker_cameras, render_cameras, render_run, render_view, view_name
from hifa.texture import TexturedMesh
from tests.test_train import tiny_config

STEP = 7
DEPTH_MODEL = "org/dpt-audit"


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """An untrained run (an opaque density blob) at step 7, rendered, depth-estimated, meshed and evaluated."""
    root = tmp_path_factory.mktemp("audit-steps")
    run = root / "run"
    run.mkdir()
    extra = ["tracking.enabled=false", "field.blob_density=30", "field.blob_radius=0.5", "mesh.texture_size=64"]
    config = tiny_config(root, extra=extra)
    (run / "config.yaml").write_text(dump_yaml(config))
    write_weights(run, build_renderer(config).state_dict(), STEP, config)
    render = render_run(run, RenderOptions(views=2, resolution=16), progress=False)
    depth = estimate_depth(run, progress=False)
    mesh = mesh_run(run, MeshOptions(resolution=24, preview_resolution=16))
    written = json.loads((run / "depth" / "depth.json").read_text())
    written["estimator"]["model"] = DEPTH_MODEL
    (run / "depth" / "depth.json").write_text(json.dumps(written))
    metrics = evaluate_run(run, EvaluateOptions(clip_models=(), surface_points=500), progress=False)
    return SimpleNamespace(run=run, config=config, render=render, depth=depth, mesh=mesh, metrics=metrics)


def orbit_position(radius, polar_deg, azimuth_deg):
    """method.md §6.5: (r sin(polar) sin(azimuth), r cos(polar), r sin(polar) cos(azimuth))."""
    p, a = math.radians(polar_deg), math.radians(azimuth_deg)
    return [radius * math.sin(p) * math.sin(a), radius * math.cos(p), radius * math.sin(p) * math.cos(a)]


@pytest.mark.parametrize("field, value, key", [
    ("views", 0, "views"), ("radius", 1.0, "radius"), ("fovy_deg", 180.0, "fovy"), ("fovy_deg", 0.0, "fovy"),
    ("elevation_deg", 90.5, "elevation"), ("resolution", 7, "resolution"), ("chunk_rays", 0, "chunk-rays"),
])
def test_render_options_refuse_values_out_of_range(field, value, key):
    """Each render option outside its documented range is a config error naming the option."""
    with pytest.raises(ConfigError) as info:
        RenderOptions(**{field: value})
    assert info.value.key == key
    RenderOptions(views=1, radius=1.01, fovy_deg=179.0, elevation_deg=90.0, resolution=8, chunk_rays=1)


def test_render_and_marker_cameras_follow_the_documented_orbit():
    """Cameras at polar 90° - elevation, evenly spaced azimuths; render.json's cameras rebuild the same orbit."""
    options = RenderOptions(views=4, elevation_deg=20.0, radius=3.2, fovy_deg=20.0, start_azimuth_deg=10.0)
    expected = [orbit_position(3.2, 70.0, 10.0 + 90.0 * i) for i in range(4)]
    cams = render_cameras(options)
    assert np.allclose(cams.origins.numpy(), expected, atol=1e-5)
    marker = {"cameras": {"views": 4, "polar_deg": 70.0, "radius": 3.2, "fovy_deg": 20.0, "start_azimuth_deg": 10.0}}
    rebuilt = marker_cameras(marker)
    assert np.allclose(rebuilt.origins.numpy(), expected, atol=1e-5) and np.allclose(rebuilt.fovy_deg.numpy(), 20.0)


@pytest.mark.parametrize("azimuth, expected", [(0.0, (-0.3, 0.5, 1.0)), (90.0, (1.0, 0.5, 0.3))])
def test_light_comes_from_the_camera_raised_and_to_its_left(azimuth, expected):
    """light = normalise(back + 0.5 up - 0.3 right): camera at +z (right +x) and at +x (right -z)."""
    camera = orbit_cameras(1, polar_deg=90.0, radius=3.0, start_azimuth_deg=azimuth)
    want = np.array(expected) / np.linalg.norm(expected)
    assert np.allclose(light_direction(camera).numpy(), want, atol=1e-6)


def test_view_names_pad_to_the_largest_index_with_at_least_three_digits():
    """A view's file stem has the digits of the last index, never fewer than three."""
    assert [view_name(0, 1), view_name(999, 1000), view_name(7, 1001), view_name(1000, 1001)] == ["000", "999", "0007", "1000"]


class RecordingRenderer:
    """Stands in for a renderer: records each render_views call's options, returns constant maps."""

    def __init__(self):
        self.calls = []
        self.weight = torch.zeros(1)

    def parameters(self):
        return iter([self.weight])

    def render_views(self, cameras, height, width, options):
        self.calls.append(options)
        return {"image": torch.full((1, height, width, 3), 0.5), "depth": torch.full((1, height, width), 3.0),
                "opacity": torch.ones(1, height, width), "normals": torch.full((1, height, width, 3), 0.25)}


def test_render_view_shades_textureless_as_render_json_says(untrained_run):
    """Albedo on white, then textureless with ambient 0.1 and the camera's raised-left light, as render.json states."""
    renderer = RecordingRenderer()
    camera = orbit_cameras(1, polar_deg=90.0, radius=3.0)
    view = render_view(renderer, camera, 4)
    albedo, plain = renderer.calls
    assert torch.equal(albedo.background, torch.ones(3)) and albedo.shading != "textureless"
    assert plain.shading == "textureless" and plain.ambient == pytest.approx(0.1) and torch.equal(plain.background, torch.ones(3))
    assert np.allclose(plain.light_dir.numpy(), np.array([-0.3, 0.5, 1.0]) / np.linalg.norm([-0.3, 0.5, 1.0]), atol=1e-6)
    assert set(view) == {"rgb", "depth", "opacity", "textureless", "normal"} and view["normal"].shape == (4, 4, 3)
    assert "ambient 0.1 + 0.9 max(0, n.l)" in untrained_run.render["shading"]["textureless"]


def test_render_json_records_the_trained_step_and_the_run_s_chunk_on_a_cpu(untrained_run):
    """render.json: the checkpoint's step, and on a CPU the run's renderer.chunk_rays (no GPU minimum)."""
    marker = json.loads((untrained_run.run / "render" / "render.json").read_text())
    assert marker["step"] == STEP
    assert marker["options"]["chunk_rays"] == untrained_run.config.renderer.chunk_rays


def test_opacity_pngs_are_the_saved_opacity_in_8_bits(untrained_run):
    """opacity/NNN.png holds round(255 O) of the O saved in depth.npz."""
    with np.load(untrained_run.run / "render" / "depth.npz") as arrays:
        opacity = arrays["opacity"]
    for i, name in enumerate(untrained_run.render["files"]["opacity"]):
        png = np.asarray(Image.open(untrained_run.run / "render" / name), dtype=np.int32)
        assert png.shape == opacity[i].shape and np.abs(png - np.round(opacity[i] * 255)).max() <= 1


def test_depth_pngs_colour_the_nearest_surface_warm_and_the_farthest_cool(untrained_run):
    """depth_range is the min and max of depth / O over O > 0.5; the nearest pixel is red, the farthest blue."""
    with np.load(untrained_run.run / "render" / "depth.npz") as arrays:
        depth, opacity = arrays["depth"], arrays["opacity"]
    mask = opacity > 0.5
    surface = np.where(mask, depth / np.maximum(opacity, 1e-6), np.nan)
    assert untrained_run.render["depth_range"] == pytest.approx([np.nanmin(surface), np.nanmax(surface)], rel=1e-5)
    near = np.unravel_index(np.nanargmin(surface), surface.shape)
    far = np.unravel_index(np.nanargmax(surface), surface.shape)
    folder = untrained_run.run / "render"
    images = [np.asarray(Image.open(folder / name), dtype=np.int32) for name in untrained_run.render["files"]["depth"]]
    red, blue = images[near[0]][near[1:]], images[far[0]][far[1:]]
    assert red[0] > red[2] + 50 and blue[2] > blue[0]
    background = np.argwhere(~mask)[0]
    assert (images[background[0]][tuple(background[1:])] == 255).all()


class TruncatingEstimator:
    """Sees what a real estimator sees (the images truncated to 8 bits) and returns its channel mean; records batch sizes."""

    def __init__(self):
        self.batches = []

    def estimate(self, images, size):
        self.batches.append(len(images))
        return (images * 255).to(torch.uint8).float().mean(1)


def test_run_estimator_keeps_every_view_in_order_and_every_8_bit_level():
    """Five views in batches of two: calls of 2, 2 and 1, the disparities in view order, each stored level read back as itself."""
    levels = torch.arange(5 * 4 * 64, dtype=torch.float32).remainder(256).view(5, 1, 4, 64)
    images = (levels / 255.0).expand(5, 3, 4, 64).contiguous()
    estimator = TruncatingEstimator()
    out = run_estimator(estimator, SimpleNamespace(prompt="p"), {}, images, batch=2, progress=False)
    assert estimator.batches == [2, 2, 1] and out.shape == (5, 4, 64)
    assert np.array_equal(out, levels[:, 0].numpy())


def test_aligned_estimate_is_the_fitted_scale_and_shift_on_the_mask(untrained_run):
    """estimated.npz: aligned = s y + t (depth.json's per-view fit) where O > 0.5, 0 elsewhere."""
    with np.load(untrained_run.run / "depth" / "estimated.npz") as arrays:
        disparity, aligned = arrays["disparity"], arrays["aligned"]
    with np.load(untrained_run.run / "render" / "depth.npz") as arrays:
        opacity = arrays["opacity"]
    per_view = untrained_run.depth["consistency"]["per_view"]
    assert all(view["scale"] is not None for view in per_view) and (aligned != 0).any()
    for i, view in enumerate(per_view):
        expected = np.where(opacity[i] > 0.5, view["scale"] * disparity[i] + view["shift"], 0.0)
        assert np.allclose(aligned[i], expected, rtol=1e-5, atol=1e-6)


def test_depth_json_names_the_training_step_of_the_renders(untrained_run):
    """depth.json's step is the step render.json was made from."""
    assert untrained_run.depth["step"] == STEP == json.loads((untrained_run.run / "depth" / "depth.json").read_text())["step"]


def test_an_all_zero_disparity_is_drawn_not_blanked():
    """Zeros are background (white) beside non-zero disparity, but an all-zero map is drawn in colour."""
    some = np.zeros((4, 4))
    some[1:3, 1:3] = [[1.0, 2.0], [3.0, 4.0]]
    image = disparity_image(some)
    assert np.allclose(image[0, 0], 1.0) and not np.allclose(image[1, 1], 1.0)
    blank = disparity_image(np.zeros((4, 4)))
    assert not np.allclose(blank, 1.0) and np.allclose(blank, blank[0, 0])


def test_colour_note_at_depth_zero_is_the_surface_albedo():
    """mesh.colour_depth 0 means the albedo at the surface point; a positive depth names its 0.2 d to d span."""
    assert colour_note(0.0) == "albedo at the surface point"
    assert colour_note(0.5).startswith("albedo seen head-on: composited along -n from 0.1 outside to 0.5 inside")


@pytest.mark.parametrize("kwargs, key", [
    ({"threshold": math.inf}, "mesh.threshold"), ({"threshold": -math.inf}, "mesh.threshold"),
    ({"threshold": math.nan}, "mesh.threshold"),
    ({"preview_resolution": 7}, "mesh.preview_resolution"),
])
def test_mesh_options_refuse_non_finite_thresholds_and_tiny_previews(kwargs, key):
    """A threshold must be a finite density (or 'otsu'); the preview at least 8 pixels."""
    with pytest.raises(HifaError, match=key):
        MeshOptions(**kwargs)
    assert MeshOptions(preview_resolution=8, threshold=2.5).threshold == 2.5


def grey_sphere(flip=False):
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.8)
    faces = np.asarray(sphere.faces)[:, ::-1] if flip else np.asarray(sphere.faces)
    return TexturedMesh(np.asarray(sphere.vertices), faces, np.full((len(sphere.vertices), 2), 0.5),
                        np.asarray(sphere.vertex_normals), np.full((4, 4, 3), 0.5))


def test_preview_frames_the_whole_mesh_and_lights_either_winding():
    """The preview's border is white background around the whole mesh; flipped faces shade the same."""
    image = preview(grey_sphere(), views=2, resolution=24).numpy()
    assert image.shape == (24, 48, 3)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, 23], image[:, 24], image[:, -1]])
    assert np.allclose(border, 1.0) and (image[12, 12] < 0.9).all()
    assert np.allclose(preview(grey_sphere(flip=True), views=2, resolution=24).numpy(), image, atol=1e-5)


def test_mesh_json_describes_the_files_it_wrote(untrained_run):
    """mesh.json's bounds are the .ply's; its config lists max_faces; grid, colours as configured."""
    ply = trimesh.load(untrained_run.run / "mesh" / "mesh.ply", process=False)
    result = untrained_run.mesh
    assert np.allclose(result["bounds"]["max"], ply.vertices.max(0), atol=1e-5)
    assert np.allclose(result["bounds"]["min"], ply.vertices.min(0), atol=1e-5)
    assert result["mesh_config"]["max_faces"] == untrained_run.config.mesh.max_faces and untrained_run.config.mesh.auto_bounds
    assert result["grid"].endswith("cropped to the occupied box")
    assert ply.visual.kind == "vertex" and result["vertex_colors"] == colour_note(untrained_run.config.mesh.colour_depth)


def test_finite_replaces_every_non_finite_float_with_null():
    """NaN and both infinities become None in dicts, lists and tuples; other values stay."""
    value = {"a": [math.inf, -math.inf, math.nan, 1.5], "b": (2.0, math.nan), "c": {"d": math.inf}, "e": "x", "f": 3}
    assert finite(value) == {"a": [None, None, None, 1.5], "b": [2.0, None], "c": {"d": None}, "e": "x", "f": 3}


def test_depth_summary_copies_the_consistency_scores(tmp_path):
    """The depth step's abs_rel, pearson, views_scored, estimator and definition; None without depth.json."""
    assert depth_summary(tmp_path) is None
    (tmp_path / "depth").mkdir()
    estimator = {"kind": "dpt", "model": "m"}
    consistency = {"abs_rel": 0.2, "pearson": 0.9, "views_scored": 3, "definition": "d", "per_view": []}
    (tmp_path / "depth" / "depth.json").write_text(json.dumps({"consistency": consistency, "estimator": estimator}))
    expected = {"abs_rel": 0.2, "pearson": 0.9, "views_scored": 3, "estimator": estimator, "definition": "d"}
    assert depth_summary(tmp_path) == expected


def test_metric_items_flattens_names_and_drops_flags_and_non_finite_values():
    """MLflow names keep letters, digits, _-. / and space; booleans, None and non-finite numbers are left out."""
    scores = {"clip_score": {"mean": 30.0}, "r_precision": {"colour": 0.5, "textureless": 0.25}}
    metrics = {
        "clip": {"ViT-B/32": scores, "odd:name": {**scores, "clip_score_mesh": {"mean": 28.0}}},
        "groundtruth": {"psnr": 20.0, "scene": "torus", "flag": True, "chamfer": math.nan, "ssim": math.inf, "views": 4},
        "depth_consistency": {"abs_rel": 0.1, "pearson": None},
    }
    assert metric_items(metrics) == {
        "eval.clip_score.ViT-B/32": 30.0, "eval.r_precision.ViT-B/32.colour": 0.5, "eval.r_precision.ViT-B/32.textureless": 0.25,
        "eval.clip_score.odd_name": 30.0, "eval.clip_score_mesh.odd_name": 28.0, "eval.r_precision.odd_name.colour": 0.5,
        "eval.r_precision.odd_name.textureless": 0.25, "eval.psnr": 20.0, "eval.views": 4.0,
        "eval.depth_consistency.abs_rel": 0.1,
    }


def write_mesh_marker(run, marker):
    (run / "mesh").mkdir(parents=True, exist_ok=True)
    (run / "mesh" / "mesh.json").write_text(json.dumps(marker))


def test_mesh_inputs_note_a_mesh_without_texture_or_without_a_file_list(tmp_path):
    """An untextured mesh gives (ply, None) and a note; a file list that is not a dict is a note, or the oracle's error."""
    write_mesh_marker(tmp_path, {"step": 3, "files": {"ply": "mesh.ply"}})
    notes = []
    assert mesh_inputs(tmp_path, 3, False, notes) == (tmp_path / "mesh" / "mesh.ply", None)
    assert len(notes) == 1 and notes[0].startswith("the mesh has no texture")
    write_mesh_marker(tmp_path, {"step": 3, "files": None})
    notes = []
    assert mesh_inputs(tmp_path, 3, False, notes) == (None, None)
    assert len(notes) == 1 and "does not list the mesh's files" in notes[0]
    with pytest.raises(HifaError, match="does not list the mesh's files"):
        mesh_inputs(tmp_path, 3, True, [])


def test_oracle_evaluation_without_clip_still_scores_the_textured_mesh(untrained_run):
    """--clip-models none in the oracle world: the ground truth still gets the textured mesh's PSNR."""
    truth = untrained_run.metrics["groundtruth"]
    assert untrained_run.metrics["clip"] == {} and isinstance(truth["mesh_psnr"], float) and 0 < truth["mesh_psnr"] < 60


def test_metrics_record_the_orbit_without_its_azimuth_list_and_the_depth_model(untrained_run):
    """metrics.json keeps the render cameras' settings (not the per-view azimuths) and names the depth model."""
    cameras = untrained_run.metrics["cameras"]
    assert cameras["elevation_deg"] == 20.0 and cameras["polar_deg"] == 70.0 and cameras["views"] == 2
    assert "azimuth_deg" not in cameras
    assert untrained_run.metrics["model_ids"]["depth"] == DEPTH_MODEL and untrained_run.metrics["step"] == STEP
