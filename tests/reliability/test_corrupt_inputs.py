"""Issue 8.4, corrupt inputs: checkpoints, mesh files, cached oracle banks and model folders that are
truncated, garbage or tampered with give one clear line (or, for a cache, are rebuilt); none is used
as if it were good data, and none runs code."""

from __future__ import annotations

import io
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from hifa import cli
from hifa.errors import HifaError
from tests.reliability.helpers import PROMPT, tiny_config, tiny_overrides


def main(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny oracle run folder (do not modify: copy it)."""
    from hifa.training import run_training

    tmp = tmp_path_factory.mktemp("trained")
    run_training(tiny_config(tmp), tmp / "run", progress=False)
    return tmp / "run"


class Payload:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def damaged_checkpoints(good: bytes, pwned: Path, state: dict) -> dict[str, bytes]:
    wrong_shape = dict(state, renderer={k: torch.zeros(3) for k in state["renderer"]})
    return {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "garbage": os.urandom(4096),
        "zeroed tail": good[: len(good) - 2048] + bytes(2048),
        "not a checkpoint": torch_bytes({"weights": torch.ones(3)}),
        "a list": torch_bytes([1, 2, 3]),
        "wrong shapes": torch_bytes(wrong_shape),
        "code inside": torch_bytes({"step": 3, "renderer": Payload(pwned)}),
    }


def test_damaged_checkpoints_and_weights_are_one_line_errors_for_train_render_and_mesh(trained, tmp_path, capsys):
    good = (trained / "checkpoint.pt").read_bytes()
    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    pwned = tmp_path / "PWNED"
    sets = [f"--set={o}" for o in tiny_overrides(tmp_path / "cache")]
    for name, data in damaged_checkpoints(good, pwned, state).items():
        run = tmp_path / name.replace(" ", "-")
        shutil.copytree(trained, run)
        (run / "checkpoint.pt").write_bytes(data)
        (run / "weights.pt").write_bytes(data)  # what render and mesh read first
        config_before = (run / "config.yaml").read_bytes()
        for argv in (["train", "--prompt", PROMPT, "--prior", "oracle", "--quiet", "--resume", "--out", str(run), *sets],
                     ["render", str(run), "--views", "2", "--resolution", "8", "--quiet"],
                     ["mesh", str(run), "--resolution", "16"]):
            code, err = main(argv, capsys)
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1, (name, argv[0], err)
            assert lines[0].startswith("hifa: error: ") and ("checkpoint" in lines[0] or "weights.pt" in lines[0]), (name, argv[0], err)
        assert (run / "checkpoint.pt").read_bytes() == data, "a damaged checkpoint is never overwritten by a guess"
        assert (run / "weights.pt").read_bytes() == data
        assert (run / "config.yaml").read_bytes() == config_before
        assert not (run / "render" / "render.json").exists() and not (run / "mesh" / "mesh.json").exists()
    assert not pwned.exists(), "weights_only loading: a checkpoint cannot run code"


def test_a_checkpoint_of_another_asset_is_refused(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    sets = [f"--set={o}" for o in tiny_overrides(tmp_path / "cache")]
    base = ["train", "--prompt", PROMPT, "--prior", "oracle", "--quiet", "--resume", "--out", str(run), *sets]
    for extra, key in ((["--method", "dreamfusion"], "preset"), (["--set", "seed=7"], "seed"), (["--set", "field.grid.n_levels=5"], "field.grid.n_levels")):
        code, err = main([*base, *extra], capsys)
        assert code == 2 and f"was trained with {key} = " in err and "another asset, not a continuation" in err, err


def test_a_resume_may_change_how_the_field_is_computed(trained, tmp_path, capsys, caplog):
    """field.mlp_precision and field.grid.backend change the arithmetic, not the asset: a resume warns and goes on."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    sets = [f"--set={o}" for o in tiny_overrides(tmp_path / "cache")]
    base = ["train", "--prompt", PROMPT, "--prior", "oracle", "--quiet", "--resume", "--out", str(run), *sets]
    with caplog.at_level("WARNING", logger="hifa"):
        code, err = main([*base, "--set", "field.mlp_precision=bf16", "--set", "field.grid.backend=auto"], capsys)
    assert code == 0, err
    assert "changed settings: field.grid.backend, field.mlp_precision" in caplog.text, caplog.text


# --- mesh files ----------------------------------------------------------------------------------------


def mesh_bytes(suffix: str) -> bytes:
    import trimesh

    data = trimesh.creation.icosphere(3).export(file_type=suffix)
    return data.encode() if isinstance(data, str) else data


def damaged_meshes(folder: Path) -> dict[str, Path]:
    ply, glb = mesh_bytes("ply"), mesh_bytes("glb")
    nan = mesh_bytes("obj").replace(b"v ", b"v nan ", 1)
    files = {
        "truncated.ply": ply[: int(len(ply) * 0.6)],
        "nearly-whole.ply": ply[:-20],
        "garbage.ply": os.urandom(2000),
        "empty.ply": b"",
        "header-only.ply": ply[: ply.index(b"end_header") + 11],
        "truncated.glb": glb[: len(glb) // 2],
        "nan.obj": nan,
        "text.stl": b"this is not a mesh\n",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def test_damaged_mesh_files_are_refused_as_scenes(tmp_path, capsys):
    for name, path in damaged_meshes(tmp_path).items():
        code, err = main(["scenes", "render", "--scene", str(path), "--out", str(tmp_path / "out"), "--views", "1", "--resolution", "8"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"hifa: error: cannot read mesh file {path}"), (name, err)
    assert not (tmp_path / "out").exists()


def test_damaged_run_mesh_is_refused_by_evaluate(tmp_path):
    from hifa.evaluate.truth import mesh_metrics
    from hifa.guidance.oracle import scene_for_prompt

    scene = scene_for_prompt(PROMPT)
    for name, path in damaged_meshes(tmp_path).items():
        if path.suffix != ".ply" and path.suffix != ".glb":
            continue
        with pytest.raises(HifaError, match=r"(cannot read mesh|has no faces).*run `hifa mesh` again"):
            mesh_metrics(path, scene, 1000, 0.01)


# --- the oracle's bank cache ---------------------------------------------------------------------------


def test_a_damaged_bank_cache_is_rebuilt_never_used(tmp_path, caplog):
    from hifa.guidance.oracle import OracleConfig, load_bank, scene_for_prompt

    config = OracleConfig(resolution=16, views=24, uncond_views_per_scene=4, cache_dir=str(tmp_path))
    scene = scene_for_prompt(PROMPT)
    fresh = load_bank(scene, config)
    path = next(config.cache_root().glob("green-torus-*.pt"))
    good = path.read_bytes()
    data = torch.load(path, weights_only=True)
    tampered = dict(data, images=data["images"].clone())
    tampered["images"][3, :, 5, 5] = 0.5  # one pixel: the file loads fine, the SHA-256 does not match
    other = next(config.cache_root().glob("green-torus-*.pt"))
    cases = {
        "truncated": good[: len(good) // 2],
        "garbage": os.urandom(len(good)),
        "empty": b"",
        "tampered pixel": torch_bytes(tampered),
        "wrong shapes": torch_bytes(dict(data, images=data["images"][:5])),
        "another scene's bank": torch_bytes(dict(data, key="0123456789abcdef")),
        "no checksum": torch_bytes({k: v for k, v in data.items() if k != "sha256"}),
        "code inside": torch_bytes(dict(data, images=Payload(tmp_path / "PWNED"))),
    }
    for name, damaged in cases.items():
        other.write_bytes(damaged)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hifa.guidance.oracle"):
            bank = load_bank(scene, config)
        assert torch.equal(bank.images, fresh.images) and torch.equal(bank.disparity, fresh.disparity), name
        assert any("is corrupt" in r.getMessage() and "rebuilding it" in r.getMessage() for r in caplog.records), name
        assert path.read_bytes() == good, f"{name}: the rebuilt file is the good one again"
    assert not (tmp_path / "PWNED").exists()


# --- model folders ----------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "truncated text encoder weights": lambda f: truncate(f / "text_encoder" / "model.safetensors"),
    "truncated UNet weights": lambda f: truncate(f / "unet" / "diffusion_pytorch_model.safetensors"),
    "truncated VAE weights": lambda f: truncate(f / "vae" / "diffusion_pytorch_model.safetensors"),
    "garbage UNet weights": lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(5000)),
    "truncated UNet config": lambda f: truncate(f / "unet" / "config.json"),
    "truncated tokenizer": lambda f: truncate(f / "tokenizer" / "tokenizer.json"),
    "truncated scheduler config": lambda f: truncate(f / "scheduler" / "scheduler_config.json"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_model_folder_is_named_damaged(damage, tiny_sd, tmp_path):
    from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior

    folder = tmp_path / "sd"
    shutil.copytree(tiny_sd, folder)
    DAMAGE[damage](folder)
    with pytest.raises(HifaError) as info:
        StableDiffusionPrior(StableDiffusionConfig(model=str(folder)))
    message = str(info.value)
    assert "\n" not in message and f"Stable Diffusion model '{folder}' is damaged" in message, message
    assert "truncated or corrupt" in message and "not available" not in message


def test_missing_model_folders_and_components_say_so(tiny_sd, tmp_path, capsys, monkeypatch):
    from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior

    folder = tmp_path / "sd"
    shutil.copytree(tiny_sd, folder)
    shutil.rmtree(folder / "unet")
    with pytest.raises(HifaError, match=r"folder '.*' has no unet/"):
        StableDiffusionPrior(StableDiffusionConfig(model=str(folder)))
    with pytest.raises(HifaError, match=r"folder '/no/such/model' does not exist"):
        StableDiffusionPrior(StableDiffusionConfig(model="/no/such/model"))
    # Through the CLI: one line, and no run folder or MLflow run for a model that cannot load.
    monkeypatch.chdir(tmp_path)
    code, err = main(["train", "--prompt", "a corgi", "--prior", f"stable-diffusion:{folder}", "--quiet", "--no-mlflow",
                      "--out", str(tmp_path / "run")], capsys)
    lines = [line for line in err.splitlines() if line.startswith("hifa:")]  # (transformers prints a progress bar)
    assert code == 2 and len(lines) == 1 and "has no unet/" in lines[0], err
    assert not (tmp_path / "run").exists()


def test_damaged_config_in_a_run_folder_is_one_line(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "config.yaml").write_bytes(b"iterations: [1,\nseed: 0\n")
    code, err = main(["render", str(run), "--views", "2", "--resolution", "8", "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "malformed YAML" in err, err
