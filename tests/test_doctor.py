"""`hifa doctor`: each check's outcome on this CPU machine, with models cached, local, downloadable or missing."""

import json
from pathlib import Path

import pytest
import torch

from hifa import doctor
from hifa.cli import main

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and a way to put a model's snapshot in it."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def add(model: str, files=("model_index.json",)):
        folder = cache / f"models--{model.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text(REVISION)
        for name in files:
            (folder / "snapshots" / REVISION / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "snapshots" / REVISION / name).write_text("{}")
    return add


def run(capsys, *args):
    code = main(["doctor", *args])
    return code, capsys.readouterr().out


def line(out: str, name: str) -> str:
    """A check's line as 'mark name detail', single-spaced (the names are padded to one width)."""
    return " ".join(next(x for x in out.splitlines() if x[3:].startswith(name + " ")).split())


def test_cached_and_local_models_pass_offline_and_only_warnings_remain(tmp_path, capsys, hub_cache, monkeypatch, models):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache("someone/sd")
    depth = models[1]
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    (clip_dir / "ViT-B-32.pt").write_bytes(b"weights")
    monkeypatch.setenv("HIFA_CLIP_DIR", str(clip_dir))
    code, out = run(capsys, "--model", "someone/sd", "--depth-model", str(depth), "--clip-models", "ViT-B/32", "--results", str(tmp_path / "res"))
    assert code == 0, out
    assert line(out, "prior").startswith("✓ prior") and f"someone/sd: cached, revision {REVISION[:7]}" in out
    assert line(out, "depth").startswith("✓ depth") and "local folder, fingerprint" in out
    assert line(out, "clip").startswith("✓ clip") and f"ViT-B/32 in {clip_dir}" in out
    assert line(out, "results").startswith("✓ results") and "writable" in out  # res/ does not exist yet: its parent is checked
    # A CPU machine is a warning (the oracle and tiny worlds only), a CUDA one a pass.
    assert line(out, "device").startswith("✓ device" if torch.cuda.is_available() else "! device no CUDA GPU")
    assert out.splitlines()[0].endswith("(offline: HF_HUB_OFFLINE or HIFA_OFFLINE set)")
    assert out.splitlines()[-1].startswith("ready, with ")


def test_a_missing_model_fails_with_how_to_get_it(tmp_path, capsys, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HIFA_CLIP_DIR", str(tmp_path / "no-clip"))
    code, out = run(capsys, "--model", "someone/not-cached", "--depth-model", str(tmp_path / "nowhere"), "--results", str(tmp_path))
    assert code == 1
    assert line(out, "prior").startswith("✗ prior") and "`hf download someone/not-cached`" in out
    assert line(out, "depth").startswith("✗ depth") and "does not exist" in line(out, "depth")
    assert line(out, "clip").startswith("✗ clip") and "ViT-B/32" in line(out, "clip") and "clip.load(" in line(out, "clip")
    assert out.splitlines()[-1].startswith("3 checks failed (✗)")


@pytest.mark.parametrize("hub_up", [True, False], ids=["hub-reachable", "hub-unreachable"])
def test_an_uncached_model_online_downloads_later_or_fails_when_the_hub_is_unreachable(tmp_path, capsys, hub_cache, monkeypatch, hub_up):
    for name in ("HF_HUB_OFFLINE", "HIFA_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(doctor, "reachable", lambda url: hub_up)
    check = doctor.check_model("prior", "someone/not-cached", "Stable Diffusion model", doctor.PIPELINE)
    if hub_up:
        assert check.status == doctor.WARN and "downloaded from huggingface.co on first use" in check.detail
    else:
        assert check.status == doctor.FAIL and "cannot be reached from this machine" in check.detail and "hf download someone/not-cached" in check.detail


def test_a_local_model_folder_must_hold_a_model_of_its_kind(tmp_path, capsys, monkeypatch, models):
    """An empty folder, or a depth model given as the prior and the prior as the depth model, fails; each its own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sd, dpt = models
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = run(capsys, "--model", str(empty), "--depth-model", str(empty), "--clip-models", "none",
                    "--results", str(tmp_path))
    assert code == 1
    assert line(out, "prior") == (f"✗ prior Stable Diffusion model '{empty}' is not a diffusers pipeline folder: "
                                  "it has no tokenizer/, text_encoder/, vae/, unet/, scheduler/")
    assert line(out, "depth") == (f"✗ depth depth model '{empty}' is not a transformers model folder: "
                                  "it has no config.json, weights (*.safetensors or *.bin), preprocessor_config.json")
    code, out = run(capsys, "--model", str(dpt), "--depth-model", str(sd), "--clip-models", "none", "--results", str(tmp_path))
    assert code == 1
    assert line(out, "prior").startswith(f"✗ prior Stable Diffusion model '{dpt}' is not a diffusers pipeline folder")
    assert line(out, "depth").startswith(f"✗ depth depth model '{sd}' is not a transformers model folder")
    code, out = run(capsys, "--model", str(sd), "--depth-model", str(dpt), "--clip-models", "none", "--results", str(tmp_path))
    assert line(out, "prior").startswith(f"✓ prior {sd}: local folder, fingerprint ")
    assert line(out, "depth").startswith(f"✓ depth {dpt}: local folder, fingerprint ")


def test_a_file_given_as_a_model_or_results_folder_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    file = tmp_path / "file.yaml"
    file.write_text("model: x\n")
    code, out = run(capsys, "--model", str(file), "--depth-model", str(file), "--clip-models", "none", "--results", str(file))
    assert code == 1
    assert line(out, "prior") == f"✗ prior Stable Diffusion model '{file}' is a file, not a folder"
    assert line(out, "depth") == f"✗ depth depth model '{file}' is a file, not a folder"
    assert line(out, "results") == f"✗ results --results {file} is a file, not a folder"
    assert doctor.check_storage(file / "results").detail == f"--results {file / 'results'}: {file} is a file, not a folder"


def test_a_read_only_or_full_results_folder_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor.os, "access", lambda path, mode: False)
    assert doctor.check_storage(tmp_path / "results").status == doctor.FAIL
    monkeypatch.undo()
    monkeypatch.setattr(doctor, "MIN_FREE_GIB", float("inf"))
    full = doctor.check_storage(tmp_path)
    assert full.status == doctor.WARN and "GiB free (under inf GiB)" in full.detail


def test_json_lists_every_check(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out = run(capsys, "--model", str(tmp_path), "--depth-model", str(tmp_path), "--clip-models", "none", "--results", str(tmp_path), "--json")
    data = json.loads(out)
    assert [c["name"] for c in data["checks"]] == ["device", "kernels", "prior", "depth", "clip", "results", "compile cache"]
    assert data["offline"] is True and code == (1 if any(c["status"] == "failed" for c in data["checks"]) else 0)
    assert {c["status"] for c in data["checks"]} <= {"ok", "warning", "failed"}


def test_the_compile_cache_check_names_the_folder_jobs_compile_into(tmp_path, monkeypatch):
    """$TORCHINDUCTOR_CACHE_DIR with the size of what is there, a note when it is in the temp dir (node-local on a
    cluster), and a failure with what to set when it cannot be written."""
    cache = tmp_path / "cache"
    (cache / "fxgraph").mkdir(parents=True)
    (cache / "fxgraph" / "entry").write_bytes(bytes(3 * 2**20))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    check = doctor.check_compile_cache()
    assert check.status == doctor.OK and check.detail.startswith(f"{cache}: 3 MiB cached")
    monkeypatch.setattr(doctor.tempfile, "gettempdir", lambda: str(tmp_path / "elsewhere"))
    assert doctor.check_compile_cache().detail == f"{cache}: 3 MiB cached"
    monkeypatch.setattr(doctor.tempfile, "gettempdir", lambda: str(tmp_path))
    assert "on a cluster each node's own" in doctor.check_compile_cache().detail
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "locked" / "cache"))
    monkeypatch.setattr(doctor.os, "access", lambda path, mode: Path(path) != tmp_path)  # the nearest existing folder
    check = doctor.check_compile_cache()
    assert check.status == doctor.FAIL and f"{tmp_path} is not writable" in check.detail and "TORCHINDUCTOR_CACHE_DIR" in check.detail
