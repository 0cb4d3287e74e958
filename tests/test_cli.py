"""The `hifa` CLI: one-line errors for bad input, and a tiny end-to-end reconstruction."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hifa.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hifa.cli", *args], capture_output=True, text=True, cwd=cwd)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr
    return lines[-1]


def test_unknown_scene_is_one_line(tmp_path):
    proc = run_cli("reconstruct", "--scene", "unicorn", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert one_line_error(proc.stderr).startswith("hifa: error: unknown scene 'unicorn'")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["0", "-3", "abc"])
def test_non_positive_resolution_is_one_line(tmp_path, value):
    proc = run_cli("reconstruct", "--scene", "snowman", "--resolution", value, "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "argument --resolution" in one_line_error(proc.stderr)


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "hifa: error: config 'seed': must lie in [0, 2^63), got -1"),
    (["--seed", str(2**70)], f"hifa: error: config 'seed': must lie in [0, 2^63), got {2**70}"),
    (["--resolution", "4"], "hifa: error: config 'resolution': must be >= 8, got 4"),
])
def test_reconstruct_settings_out_of_range_are_one_line(tmp_path, args, message):
    proc = run_cli("reconstruct", "--scene", "snowman", *args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and one_line_error(proc.stderr) == message
    assert not (tmp_path / "out").exists()


def test_a_scene_that_is_a_folder_or_empty_and_an_out_that_is_a_file_are_one_line(tmp_path):
    proc = run_cli("reconstruct", "--scene", str(tmp_path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and one_line_error(proc.stderr) == f"hifa: error: {tmp_path} is a folder, not a mesh file"
    proc = run_cli("reconstruct", "--scene", "", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and one_line_error(proc.stderr).startswith("hifa: error: unknown scene ''; choose one of:")
    taken = tmp_path / "taken"
    taken.write_text("a file")
    proc = run_cli("reconstruct", "--scene", "snowman", "--out", str(taken))
    assert proc.returncode == 2
    assert one_line_error(proc.stderr) == f"hifa: error: --out {taken / 'snowman'}: {taken} is a file, not a folder"
    assert taken.read_text() == "a file"


def test_a_bad_option_is_one_line_naming_the_help(tmp_path):
    proc = run_cli("render", str(tmp_path), "--views", "0")
    assert proc.returncode == 2
    assert proc.stderr == "hifa render: error: argument --views: must be positive, got 0 (options: `hifa render --help`)\n"
    proc = run_cli("teleport")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("hifa: error: argument command: invalid choice: 'teleport'")


@pytest.mark.parametrize("name, text", [("bad.obj", "v 1 2\nf 9 9 9\n"), ("empty.obj", ""), ("bad.stl", "v 1 2\n"), ("bad.ply", "not a ply\n")])
def test_unreadable_mesh_file_is_one_line(tmp_path, name, text):
    bad = tmp_path / name
    bad.write_text(text)
    proc = run_cli("scenes", "render", "--scene", str(bad), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"hifa: error: cannot read mesh file {bad}") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == "", proc.stdout  # Open3D prints its warnings there
    if name == "bad.ply":  # the PLY reader (C) writes its own message to stderr: it belongs in the one line
        assert proc.stderr.rstrip().endswith("no valid triangles found (RPly: Wrong magic number. Expected 'ply')"), proc.stderr


def test_scenes_list_names_every_scene(capsys):
    assert main(["scenes", "list"]) == 0
    out = capsys.readouterr().out
    assert "snowman" in out and "a red ball on a blue box" in out


def test_commands_flush_subnormals_and_restore_torch_s_default(monkeypatch):
    import argparse

    import torch

    import hifa.cli

    seen = []

    def probe(args):  # stands in for a command: what does torch do with a subnormal meanwhile?
        seen.append(float(torch.tensor([1e-39]) * 1.0))
        return 0

    class Parser:
        def parse_args(self, argv):
            return argparse.Namespace(func=probe, verbose=False, command="probe")

    monkeypatch.setattr(hifa.cli, "build_parser", Parser)
    assert main([]) == 0
    assert seen == [0.0]  # 1e-39 is subnormal in float32: flushed to zero while a command runs
    assert float(torch.tensor([1e-39]) * 1.0) > 0  # torch's default again afterwards


def test_scenes_render_writes_truth(tmp_path):
    assert main(["scenes", "render", "--scene", "green-torus", "--out", str(tmp_path), "--views", "2", "--resolution", "32"]) == 0
    assert (tmp_path / "green-torus" / "groundtruth.png").is_file()
    assert (tmp_path / "green-torus" / "groundtruth.ply").stat().st_size > 1000


def test_tiny_reconstruction_writes_all_outputs(tmp_path):
    args = ["reconstruct", "--scene", "green-torus", "--out", str(tmp_path), "--steps", "20", "--resolution", "24",
            "--eval-resolution", "24", "--views", "6", "--batch-rays", "256", "--mesh-resolution", "48", "--texture-size", "64", "--quiet"]
    assert main(args) == 0
    run = tmp_path / "green-torus"
    for name in ("metrics.json", "train_log.csv", "comparison.png", "mesh.ply", "mesh.obj", "mesh.glb", "field.pt",
                 "textured.glb", "textured.obj", "textured.mtl", "textured.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["scene"] == "green-torus" and metrics["texture"]["size"] == 64
    for key in ("psnr", "chamfer", "fscore", "chamfer_fraction_of_extent", "mesh_threshold", "depth_mae", "mesh_psnr"):
        assert isinstance(metrics[key], float), key
    assert len((run / "train_log.csv").read_text().strip().splitlines()) == 21


def test_train_help_names_every_preset_and_the_version_is_printed(capsys):
    from hifa import __version__
    from hifa.cli import build_parser
    from hifa.presets import PRESETS

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions if "--method" in a.option_strings)
    assert all(name in train.help for name in PRESETS), train.help
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"hifa-pipeline {__version__}"


def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path):
    from tests.test_train import TINY

    args = ["train", "--prompt", "a green torus", "--prior", "oracle", "--quiet", "--no-mlflow", "--out", str(tmp_path / "typo"), "--resume",
            *[f"--set={o}" for o in TINY], "--set=iterations=1", f"--set=prior.oracle.cache_dir={tmp_path / 'cache'}"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"{tmp_path / 'typo'} holds no checkpoint to resume; training starts at step 0" in proc.stderr


def test_default_run_folder_names_a_seed_other_than_0(tmp_path):
    from hifa.configio import load_yaml
    from tests.test_train import TINY

    args = ["train", "--prompt", "a green torus", "--prior", "oracle", "--quiet", "--no-mlflow", *[f"--set={o}" for o in TINY],
            "--set=iterations=1", "--set=seed=3", f"--set=prior.oracle.cache_dir={tmp_path / 'cache'}"]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "results" / "runs" / "hifa-a-green-torus.seed3"  # as a suite names seed 3's folder
    assert f"wrote {Path('results/runs/hifa-a-green-torus.seed3')}" in proc.stdout
    assert load_yaml(out / "config.yaml")["seed"] == 3
