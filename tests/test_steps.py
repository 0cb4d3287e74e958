"""The per-run steps on a tiny oracle run: hifa render, depth, mesh, evaluate; done markers; one-line errors."""

import json
import shutil
import subprocess
import sys
import time

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

from hifa.cli import main
from hifa.errors import HifaError
from hifa.evaluate.consistency import depth_consistency, fit_scale_shift, view_consistency
from hifa.evaluate.image import ssim
from hifa.steps.evaluate import SCHEMA_FILE
from hifa.training import resolve_config, run_training
from tests.tinyclip import build_tiny_clip

PROMPT = "a green torus"
TINY = [
    "iterations=6", "resolution=16", "renderer.num_coarse=12", "renderer.num_fine=6", "checkpoint_every=6", "log_every=3",
    "val_every=6", "val_views=1", "val_resolution=16", "eval_views=2", "prior.oracle.resolution=16", "prior.oracle.views=24",
    "prior.oracle.uncond_views_per_scene=4", "field.grid.n_levels=4", "field.grid.log2_hashmap_size=12",
    "field.grid.finest_resolution=64", "mesh.resolution=32", "mesh.coarse_resolution=16",
]
VIEWS, RES, MESH_RES, PREVIEW = 3, 32, 32, 48
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps")
    overrides = [*TINY, f"prior.oracle.cache_dir={root / 'cache'}", f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}"]
    run_training(resolve_config("hifa", PROMPT, "oracle", overrides=overrides), root / "run", progress=False)
    return root / "run"


def timed(name, argv):
    t0 = time.perf_counter()
    code = main(argv)
    TIMINGS[name] = time.perf_counter() - t0
    return code


@pytest.fixture(scope="module")
def stepped(tiny_run, tmp_path_factory):
    """Every step, in DAG order, on the tiny run (tiny CLIP for evaluate, the suite's prompts from a file)."""
    folder = tmp_path_factory.mktemp("clip")
    clip_path = folder / "tiny-clip.pt"
    build_tiny_clip(clip_path)
    prompts = folder / "prompts.txt"
    prompts.write_text("a green torus\na red ball on a blue box\n\na snowman\n")
    run = str(tiny_run)
    assert timed("render", ["render", run, "--views", str(VIEWS), "--resolution", str(RES), "--quiet"]) == 0
    assert timed("depth", ["depth", run, "--quiet"]) == 0
    assert timed("mesh", ["mesh", run, "--resolution", str(MESH_RES), "--preview-resolution", str(PREVIEW)]) == 0
    args = ["evaluate", run, "--clip-models", str(clip_path), "--prompts", str(prompts), "--surface-points", "5000", "--quiet"]
    assert timed("evaluate", args) == 0
    print("step timings (s):", {k: round(v, 2) for k, v in TIMINGS.items()})
    return tiny_run


def load_json(path):
    return json.loads(path.read_text())


def image_size(path):
    with Image.open(path) as image:
        return image.size


def assert_marker_written_last(folder, marker):
    """The done marker is no older than any other file the step wrote."""
    newest = max((p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != marker), default=0)
    assert (folder / marker).stat().st_mtime_ns >= newest
    assert not list(folder.rglob("*.tmp")) and not list(folder.rglob(".*"))


def test_render_writes_every_declared_output(stepped):
    out = stepped / "render"
    marker = load_json(out / "render.json")
    assert marker["schema"] == "hifa.render/1" and marker["cameras"]["views"] == VIEWS and marker["resolution"] == RES
    assert marker["cameras"]["polar_deg"] == 70.0 and marker["cameras"]["radius"] == 3.2 and marker["cameras"]["fovy_deg"] == 20.0
    for kind in ("rgb", "textureless", "depth", "normal", "opacity"):
        assert marker["files"][kind] == [f"{kind}/{i:03d}.png" for i in range(VIEWS)]
        assert all(image_size(out / f) == (RES, RES) for f in marker["files"][kind])
    with np.load(out / "depth.npz") as arrays:
        assert arrays["depth"].shape == arrays["opacity"].shape == (VIEWS, RES, RES)
        assert arrays["depth"].dtype == np.float32 and 0 <= arrays["opacity"].min() and arrays["opacity"].max() <= 1 + 1e-5
    turntable = out / marker["files"]["turntable"]
    assert turntable.name == "turntable.mp4" and turntable.read_bytes()[4:8] == b"ftyp"
    width, height = image_size(out / "contact_sheet.png")
    assert height == 4 * RES and VIEWS * RES < width < VIEWS * RES + 120  # rgb, textureless, depth, normal rows; labels left
    rgb = np.asarray(Image.open(out / "rgb/000.png"))
    plain = np.asarray(Image.open(out / "textureless/000.png"))
    assert rgb.min() < 255 and not np.array_equal(rgb, plain)  # the object shows, and shading differs
    assert_marker_written_last(out, "render.json")


def test_depth_uses_the_oracle_truth_at_the_render_cameras(stepped):
    out = stepped / "depth"
    result = load_json(out / "depth.json")
    assert result["estimator"]["kind"] == "oracle" and result["views"] == VIEWS
    assert all(image_size(out / f) == (RES, RES) for f in result["files"]["estimated"])
    with np.load(out / "estimated.npz") as arrays:
        disparity = arrays["disparity"]
    assert disparity.shape == (VIEWS, RES, RES) and (disparity > 0).any()
    # Ground-truth disparity of the torus (radius 3.2 cameras): 1/disparity is a planar depth near the camera distance.
    depth = 1.0 / disparity[disparity > 0]
    assert depth.min() > 3.2 - 1.0 and depth.max() < 3.2 + 1.0
    consistency = result["consistency"]
    assert len(consistency["per_view"]) == VIEWS and "least-squares scale and shift" in consistency["definition"]
    assert consistency["abs_rel"] is None or consistency["abs_rel"] >= 0
    assert_marker_written_last(out, "depth.json")


def test_mesh_exports_loadable_files_and_a_preview(stepped):
    import trimesh

    out = stepped / "mesh"
    result = load_json(out / "mesh.json")
    assert result["threshold"] > 0 and result["threshold_mode"].startswith("automatic") and result["resolution"] == MESH_RES
    ply = trimesh.load(out / "mesh.ply", process=False)
    assert len(ply.faces) == result["faces"] > 0 and len(ply.vertices) == result["vertices"]
    assert np.allclose(ply.vertices.min(0), result["bounds"]["min"], atol=1e-5)
    for name in ("mesh.obj", "mesh.glb"):
        assert len(trimesh.load(out / name, force="mesh").faces) == result["faces"]
    # The textured copy: the same surface split along UV seams, its texture the size the oracle budget sets.
    texture = result["texture"]
    assert texture["files"] == {"glb": "textured.glb", "obj": "textured.obj", "mtl": "textured.mtl", "png": "textured.png"}
    assert texture["size"] == 512 and 0.2 < texture["coverage"] < 1 and texture["charts"] >= 1
    assert texture["content"].startswith("albedo seen head-on: composited along -n from 0.02 outside to 0.1 inside")
    for name in ("textured.glb", "textured.obj"):
        loaded = trimesh.load(out / name, force="mesh", process=False)
        assert len(loaded.faces) == result["faces"] and len(loaded.vertices) == texture["vertices"] >= result["vertices"]
        assert loaded.visual.uv.shape == (texture["vertices"], 2)
    assert image_size(out / "textured.png") == (512, 512)
    assert image_size(out / "preview.png") == (4 * PREVIEW, PREVIEW)
    assert_marker_written_last(out, "mesh.json")


def test_evaluate_writes_schema_valid_metrics_and_logs_them(stepped):
    out = stepped / "eval"
    metrics = load_json(out / "metrics.json")
    jsonschema.validate(metrics, json.loads(SCHEMA_FILE.read_text()))
    assert metrics["prompt"] == PROMPT and metrics["method"] == "hifa" and metrics["prior"] == "oracle" and metrics["views"] == VIEWS
    tiny = metrics["clip"]["tiny-clip"]
    assert tiny["r_precision"]["captions"] == 153 + 3  # 3 suite prompts (one is the run's own), 153 captions
    assert 0 <= tiny["r_precision"]["colour"] <= 1 and -100 <= tiny["clip_score"]["mean"] <= 100
    # The exported textured mesh scored like the renders: a CLIP score of its views at the render cameras.
    assert -100 <= tiny["clip_score_mesh"]["mean"] <= 100 and tiny["clip_score_mesh"]["mean"] != tiny["clip_score"]["mean"]
    truth = metrics["groundtruth"]
    assert truth["scene"] == "green-torus" and 0 < truth["psnr"] < 60 and -1 <= truth["ssim"] <= 1
    assert 0 <= truth["depth_mae"] < 4 and 0 < truth["chamfer"] < 2 and 0 <= truth["fscore"] <= 1
    assert 0 < truth["mesh_psnr"] < 60 and "textured.glb" in truth["definitions"]["mesh_psnr"]
    assert truth["tau"] == pytest.approx(0.01 * truth["extent"])
    assert metrics["depth_consistency"]["estimator"]["kind"] == "oracle"
    assert metrics["versions"]["clip-anytorch"] and metrics["model_ids"]["clip"]["tiny-clip"].endswith("tiny-clip.pt")
    assert_marker_written_last(out, "metrics.json")
    from mlflow.tracking import MlflowClient

    record = load_json(stepped / "run.json")
    assert metrics["tracking"]["mlflow_run_id"] == record["run_id"]
    client = MlflowClient(record["tracking_uri"])
    logged = client.get_run(record["run_id"]).data.metrics
    assert logged["eval.psnr"] == pytest.approx(truth["psnr"]) and logged["eval.clip_score.tiny-clip"] == pytest.approx(tiny["clip_score"]["mean"])
    assert logged["eval.clip_score_mesh.tiny-clip"] == pytest.approx(tiny["clip_score_mesh"]["mean"]) and logged["eval.mesh_psnr"] == pytest.approx(truth["mesh_psnr"])
    artifacts = {a.path for folder in ("render", "mesh", "eval") for a in client.list_artifacts(record["run_id"], folder)}
    assert {"render/contact_sheet.png", "render/turntable.mp4", "mesh/mesh.glb", "mesh/textured.glb", "mesh/preview.png", "eval/metrics.json"} <= artifacts


def test_evaluate_without_clip_says_so(stepped, tmp_path):
    assert main(["evaluate", str(stepped), "--clip-models", "none", "--surface-points", "2000", "--out", str(tmp_path), "--quiet"]) == 0
    metrics = load_json(tmp_path / "metrics.json")
    assert metrics["clip"] == {} and any("--clip-models none" in note for note in metrics["notes"])
    jsonschema.validate(metrics, json.loads(SCHEMA_FILE.read_text()))


def test_render_defaults_fit_the_world_of_the_run(stepped, tmp_path):
    """An oracle (CPU) run renders the demo's 8 views at 96^2 by default, not the paper's 100 at 512^2."""
    from hifa.steps.render import default_views_and_resolution

    assert default_views_and_resolution("stable-diffusion") == (100, 512)
    assert main(["render", str(stepped), "--out", str(tmp_path / "render"), "--quiet"]) == 0
    marker = load_json(tmp_path / "render" / "render.json")
    assert marker["cameras"]["views"] == 8 and marker["resolution"] == 96
    assert image_size(tmp_path / "render" / "rgb" / "000.png") == (96, 96)


def test_evaluate_refuses_a_mesh_older_than_the_renders_in_the_oracle_world(stepped, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(stepped, run)
    marker = load_json(run / "mesh" / "mesh.json")
    (run / "mesh" / "mesh.json").write_text(json.dumps({**marker, "step": marker["step"] - 1}))
    assert main(["evaluate", str(run), "--clip-models", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hifa: error: {run / 'mesh'} was made from step {marker['step'] - 1}, the renders from step {marker['step']}: run `hifa mesh {run}` again"


def test_mesh_texture_size_option_overrides_the_run_s_and_is_checked(stepped, tmp_path, capsys):
    assert main(["mesh", str(stepped), "--out", str(tmp_path / "mesh"), "--texture-size", "64", "--preview-resolution", "32"]) == 0
    assert load_json(tmp_path / "mesh" / "mesh.json")["texture"]["size"] == 64 and image_size(tmp_path / "mesh" / "textured.png") == (64, 64)
    assert "a 64² texture over" in capsys.readouterr().out
    assert main(["mesh", str(stepped), "--out", str(tmp_path / "small"), "--texture-size", "8"]) == 2
    assert "mesh.texture_size" in capsys.readouterr().err and not (tmp_path / "small" / "mesh.json").exists()


def test_mesh_atlas_option_picks_the_atlas_library_and_is_checked(stepped, tmp_path, capsys):
    assert main(["mesh", str(stepped), "--out", str(tmp_path / "mesh"), "--atlas", "xatlas", "--texture-size", "64", "--preview-resolution", "32"]) == 0
    written = load_json(tmp_path / "mesh" / "mesh.json")
    assert written["texture"]["atlas"] == "xatlas" and written["mesh_config"]["atlas"] == "xatlas"
    assert main(["mesh", str(stepped), "--out", str(tmp_path / "bad"), "--atlas", "blender"]) == 2
    assert "mesh.atlas" in capsys.readouterr().err and not (tmp_path / "bad" / "mesh.json").exists()


def test_mesh_threshold_option_sets_the_level_or_asks_for_otsu(stepped, tmp_path, capsys):
    small = ["--resolution", str(MESH_RES), "--texture-size", "64", "--preview-resolution", "32"]
    assert main(["mesh", str(stepped), "--out", str(tmp_path / "otsu"), "--threshold", "otsu", *small]) == 0
    otsu = load_json(tmp_path / "otsu" / "mesh.json")
    assert otsu["threshold_mode"].startswith("automatic") and otsu["mesh_config"]["threshold"] is None
    level = 1.5 * otsu["threshold"]  # a level the field crosses, other than the automatic one
    assert main(["mesh", str(stepped), "--out", str(tmp_path / "fixed"), "--threshold", str(level), *small]) == 0
    fixed = load_json(tmp_path / "fixed" / "mesh.json")
    assert fixed["threshold_mode"].startswith("fixed") and fixed["threshold"] == pytest.approx(level)
    assert fixed["mesh_config"]["threshold"] == pytest.approx(level)
    assert f"at density threshold {level:.4g}" in capsys.readouterr().out
    # A re-run that finds no surface leaves neither its marker nor the earlier mesh's files behind.
    assert main(["mesh", str(stepped), "--out", str(tmp_path / "fixed"), "--threshold", "1e12", *small]) == 2
    assert "no surface" in capsys.readouterr().err and sorted(p.name for p in (tmp_path / "fixed").iterdir()) == []
    for bad in ("0", "-2", "auto", "inf"):
        with pytest.raises(SystemExit) as stop:
            main(["mesh", str(stepped), "--out", str(tmp_path / "bad"), "--threshold", bad])
        assert stop.value.code == 2 and "--threshold" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_mesh_options_lay_over_the_run_s_mesh_config():
    from hifa.mesh import MeshConfig
    from hifa.steps.mesh import OTSU, MeshOptions

    run = MeshConfig(resolution=256, threshold=37.5, texture_size=512)  # the 'hifa' preset's fixed level
    assert MeshOptions().apply(run) == run
    assert MeshOptions(threshold=OTSU).apply(run).threshold is None
    assert MeshOptions(threshold=5).apply(run) == MeshConfig(resolution=256, threshold=5.0, texture_size=512)
    assert MeshOptions(resolution=64, atlas="xatlas").apply(run) == MeshConfig(resolution=64, threshold=37.5, texture_size=512, atlas="xatlas")
    with pytest.raises(HifaError, match="mesh.threshold"):
        MeshOptions(threshold=-1.0).apply(run)
    with pytest.raises(HifaError, match="mesh.threshold"):
        MeshOptions(threshold="auto")


@pytest.mark.parametrize("step", ["render", "depth", "mesh", "evaluate"])
def test_an_out_folder_that_is_a_file_is_one_line(stepped, tmp_path, capsys, step):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    extra = ["--clip-models", "none"] if step == "evaluate" else []
    assert main([step, str(stepped), "--out", str(taken / "inner"), *extra]) == 2
    assert capsys.readouterr().err.strip() == f"hifa: error: --out {taken / 'inner'}: {taken} is a file, not a folder"
    assert main([step, str(stepped), "--out", str(taken), *extra]) == 2
    assert capsys.readouterr().err.strip() == f"hifa: error: --out {taken} is a file, not a folder"
    assert taken.read_text() == "a file"


@pytest.mark.parametrize("azimuth", ["nan", "inf", "-inf"])
def test_render_refuses_a_start_azimuth_that_is_not_finite(stepped, tmp_path, capsys, azimuth):
    assert main(["render", str(stepped), "--views", "1", "--resolution", "8", f"--start-azimuth={azimuth}", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip().startswith("hifa: error: --start-azimuth: must be a finite angle in degrees")
    assert not (tmp_path / "r").exists()


def test_a_failed_step_leaves_no_done_marker(stepped, tmp_path, monkeypatch):
    out = tmp_path / "render"
    assert main(["render", str(stepped), "--views", "1", "--resolution", "16", "--out", str(out), "--quiet"]) == 0
    assert (out / "render.json").is_file()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("hifa.steps.render.write_turntable", broken)
    with pytest.raises(OSError):
        main(["render", str(stepped), "--views", "1", "--resolution", "16", "--out", str(out), "--quiet"])
    assert not (out / "render.json").exists()  # the old marker went first, no new one was written


def test_a_smaller_rerender_leaves_no_stale_views(stepped, tmp_path):
    out = tmp_path / "render"
    for views in (3, 1):
        assert main(["render", str(stepped), "--views", str(views), "--resolution", "16", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in (out / "rgb").iterdir()) == ["000.png"]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hifa.cli", *args], capture_output=True, text=True, env=env)


def one_line(proc):
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "pkg_resources" not in line]
    return lines[-1]


def test_evaluate_before_render_is_one_line(tiny_run, tmp_path):
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("config.yaml", "checkpoint.pt"):
        shutil.copy(tiny_run / name, run / name)
    line = one_line(cli("evaluate", str(run), "--clip-models", "none"))
    assert line == f"hifa: error: {run / 'render' / 'render.json'} is missing: run `hifa render {run}` first"
    assert not (run / "eval").exists()


@pytest.mark.parametrize("case", ["no-folder", "no-checkpoint", "depth-first", "no-mesh", "clip-offline"])
def test_step_errors_are_one_line(stepped, tmp_path, monkeypatch, capsys, case):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(stepped / "config.yaml", run / "config.yaml")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HIFA_CLIP_DIR", str(tmp_path / "clip"))
    argv, expected = {
        "no-folder": (["render", str(tmp_path / "nowhere")], "does not exist; train one first"),
        "no-checkpoint": (["mesh", str(run)], "checkpoint.pt is missing"),
        "depth-first": (["depth", str(run)], "render.json is missing: run `hifa render"),
        "no-mesh": (["evaluate", str(stepped), "--clip-models", "none", "--out", str(tmp_path / "e")], "mesh.json is missing: run `hifa mesh"),
        "clip-offline": (["evaluate", str(stepped), "--clip-models", "ViT-B/32", "--out", str(tmp_path / "e")], "CLIP model 'ViT-B/32' is not available offline"),
    }[case]
    if case == "no-mesh":
        shutil.move(stepped / "mesh" / "mesh.json", tmp_path / "mesh.json")
    try:
        assert main(argv) == 2
    finally:
        if case == "no-mesh":
            shutil.move(tmp_path / "mesh.json", stepped / "mesh" / "mesh.json")
    err = capsys.readouterr().err.strip()
    assert err.startswith("hifa: error: ") and "\n" not in err and expected in err, err
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_ssim_of_identical_images_is_one_and_matches_skimage():
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 24, 30, 3, generator=gen)
    b = (a + 0.1 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    expected = np.mean([
        structural_similarity(x.numpy(), y.numpy(), channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for x, y in zip(a, b)
    ])
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6) and ssim(a, b) < 0.99


def test_depth_consistency_is_zero_for_an_affine_disparity():
    gen = np.random.default_rng(0)
    depth_true = gen.uniform(2.5, 4.0, (2, 8, 8))
    opacity = np.ones((2, 8, 8))
    opacity[:, :2] = 0.2  # unmasked: ignored
    estimate = (1.0 / depth_true - 0.1) / 3.0  # d = 3 y + 0.1
    estimate[:, :2] = 99.0
    result = depth_consistency(depth_true * opacity, opacity, estimate)  # rendered depth is sum w z = O * z
    assert result["abs_rel"] == pytest.approx(0.0, abs=1e-12) and result["pearson"] == pytest.approx(1.0)
    assert result["per_view"][0]["scale"] == pytest.approx(3.0) and result["per_view"][0]["shift"] == pytest.approx(0.1)
    assert result["views_scored"] == 2 and result["per_view"][0]["pixels"] == 48
    noisy = view_consistency(depth_true[0], np.ones((8, 8)), 1.0 / depth_true[0] + gen.normal(0, 0.05, (8, 8)))
    assert noisy["abs_rel"] > 0.01 and noisy["pearson"] < 0.99
    empty = view_consistency(depth_true[0], np.zeros((8, 8)), estimate[0])
    assert empty["abs_rel"] is None and empty["pixels"] == 0
    assert fit_scale_shift(np.array([1.0, 2.0, 3.0]), np.array([5.0, 7.0, 9.0])) == pytest.approx((2.0, 3.0))


def test_tiny_world_run_uses_dpt_and_scores_clip_without_truth(tmp_path):
    """The real-model path: a run trained under the tiny Stable Diffusion, depth by the tiny DPT, a tiny CLIP."""
    from tests.tinyworld import build_tiny_dpt, build_tiny_stable_diffusion

    sd, dpt = build_tiny_stable_diffusion(tmp_path / "sd"), build_tiny_dpt(tmp_path / "dpt")
    clip_path = tmp_path / "tiny-clip.pt"
    build_tiny_clip(clip_path)
    overrides = [
        "iterations=2", "resolution=16", "renderer.num_coarse=8", "renderer.num_fine=4", "checkpoint_every=2", "val_every=2",
        "val_views=1", "val_resolution=8", "eval_views=1", f"depth.model={dpt}", "tracking.enabled=false", "field.grid.n_levels=4",
        "field.grid.log2_hashmap_size=12", "field.grid.finest_resolution=64", "mesh.resolution=16", "mesh.coarse_resolution=8",
        "mesh.threshold=1.0", "mesh.texture_size=64",
    ]
    run = tmp_path / "run"
    run_training(resolve_config("hifa", "a corgi", f"stable-diffusion:{sd}", overrides=overrides), run, progress=False)
    assert main(["render", str(run), "--views", "2", "--resolution", "32", "--quiet"]) == 0
    assert main(["depth", str(run), "--quiet"]) == 0
    depth = load_json(run / "depth" / "depth.json")
    assert depth["estimator"] == {**depth["estimator"], "kind": "dpt", "model": str(dpt)}
    with np.load(run / "depth" / "estimated.npz") as arrays:
        assert arrays["disparity"].shape == (2, 32, 32) and np.isfinite(arrays["disparity"]).all()
    assert main(["evaluate", str(run), "--clip-models", str(clip_path), "--quiet"]) == 0
    metrics = load_json(run / "eval" / "metrics.json")
    assert "clip_score_mesh" not in metrics["clip"]["tiny-clip"] and any("no mesh yet" in n for n in metrics["notes"])
    # With the mesh step done, the real world scores the exported asset too (no ground truth needed).
    assert main(["mesh", str(run), "--resolution", "24", "--preview-resolution", "32"]) == 0
    assert main(["evaluate", str(run), "--clip-models", str(clip_path), "--quiet"]) == 0
    metrics = load_json(run / "eval" / "metrics.json")
    jsonschema.validate(metrics, json.loads(SCHEMA_FILE.read_text()))
    assert -100 <= metrics["clip"]["tiny-clip"]["clip_score_mesh"]["mean"] <= 100
    # A damaged textured mesh, or one older than the renders, costs the real world its mesh score, not its evaluation.
    (run / "mesh" / "textured.glb").write_bytes(b"glTF broken")
    assert main(["evaluate", str(run), "--clip-models", str(clip_path), "--quiet"]) == 0
    metrics = load_json(run / "eval" / "metrics.json")
    assert "clip_score_mesh" not in metrics["clip"]["tiny-clip"] and any("cannot read the textured mesh" in n for n in metrics["notes"])
    marker = load_json(run / "mesh" / "mesh.json")
    (run / "mesh" / "mesh.json").write_text(json.dumps({**marker, "step": marker["step"] + 5}))
    assert main(["evaluate", str(run), "--clip-models", str(clip_path), "--quiet"]) == 0
    assert any("was made from step" in n for n in load_json(run / "eval" / "metrics.json")["notes"])
    assert main(["mesh", str(run), "--resolution", "24", "--preview-resolution", "32"]) == 0
    assert main(["evaluate", str(run), "--clip-models", str(clip_path), "--quiet"]) == 0
    metrics = load_json(run / "eval" / "metrics.json")
    assert metrics["groundtruth"] is None and metrics["prior"] == "stable-diffusion" and metrics["model_ids"]["prior"] == str(sd)
    assert metrics["clip"]["tiny-clip"]["r_precision"]["captions"] == 154 and metrics["depth_consistency"]["estimator"]["kind"] == "dpt"
