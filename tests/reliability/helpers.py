"""Shared pieces of the reliability suite: tiny oracle runs, a `hifa` subprocess runner, output checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a green torus"

# A tiny oracle-world run: 12 steps of 16x16 renders, a 24-view bank (about 3 s of training on one core).
TINY = [
    "iterations=12", "resolution=16", "renderer.num_coarse=12", "renderer.num_fine=6", "checkpoint_every=3", "log_every=1",
    "val_every=6", "val_views=2", "val_resolution=16", "eval_views=2", "prior.oracle.resolution=16", "prior.oracle.views=24",
    "prior.oracle.uncond_views_per_scene=4", "field.grid.n_levels=4", "field.grid.log2_hashmap_size=12",
    "field.grid.finest_resolution=64", "field.grid.backend=torch", "mesh.resolution=32", "mesh.coarse_resolution=16",
]


def tiny_overrides(cache: Path, db: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """TINY with a bank cache folder and an MLflow store (None: tracking off)."""
    store = [f"tracking.tracking_uri=sqlite:///{db}"] if db is not None else ["tracking.enabled=false"]
    return [*TINY, f"prior.oracle.cache_dir={cache}", *store, *extra]


def tiny_config(tmp: Path, extra: tuple[str, ...] = (), db: Path | None = None, method: str = "hifa"):
    from hifa.training import resolve_config

    return resolve_config(method, PROMPT, "oracle", overrides=tiny_overrides(tmp / "cache", db, extra))


def env(**extra: str) -> dict[str, str]:
    """Offline, no telemetry, one thread (so that runs in different processes agree bit for bit)."""
    values = dict(os.environ)
    values.update(HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                  PYTHONPATH=str(ROOT) + os.pathsep + values.get("PYTHONPATH", ""))
    values.pop("HIFA_MLFLOW_DB", None)
    values.update(extra)
    return values


def hifa_argv(*args: str) -> list[str]:
    return ["nice", "-n", "5", sys.executable, "-m", "hifa.cli", *args]


def train_argv(out: Path, cache: Path, *extra: str, prompt: str = PROMPT, db: Path | None = None) -> list[str]:
    sets = [f"--set={o}" for o in tiny_overrides(cache, db)]
    return hifa_argv("train", "--prompt", prompt, "--method", "hifa", "--prior", "oracle", "--quiet", "--out", str(out), *sets, *extra)


def run_hifa(*args: str, cwd: Path | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(hifa_argv(*args), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout, **kw)


def one_line_error(stderr: str, prefix: str = "hifa: error: ") -> str:
    """The error line of a failed command; asserts there is no traceback and the message is one line."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.strip().splitlines() if line.startswith("hifa:")]
    assert len(lines) == 1 and lines[0].startswith(prefix), stderr[-3000:]
    return lines[0]


def load_state(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def assert_same_training(a: dict, b: dict, atol: float = 1e-6) -> None:
    """Two checkpoints hold the same weights, optimiser step and log rows (time aside)."""
    assert a["step"] == b["step"]
    for name, value in a["renderer"].items():
        assert torch.allclose(value, b["renderer"][name], atol=atol), name
    assert len(a["log_rows"]) == len(b["log_rows"])
    for x, y in zip(a["log_rows"], b["log_rows"]):
        assert x.keys() == y.keys()
        for key in x.keys() - {"time_s"}:
            assert abs(x[key] - y[key]) <= 1e-5 * max(1.0, abs(x[key])), (x["step"], key, x[key], y[key])


def assert_outputs_complete(run: Path) -> list[str]:
    """Every visible file of a run folder is whole (loads); returns the names. Hidden `.*.tmp` files are
    temporaries of atomic writes, never read as outputs."""
    from PIL import Image

    names = []
    for path in sorted(p for p in run.rglob("*") if p.is_file() and not p.name.startswith(".")):
        names.append(str(path.relative_to(run)))
        if path.suffix == ".pt":
            state = torch.load(path, weights_only=True)
            whole = {"format", "step", "renderer"} if path.name == "weights.pt" else {"step", "renderer", "optimizer", "log_rows"}
            assert whole <= state.keys(), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".glb":
            import trimesh

            assert len(trimesh.load(path, force="mesh").faces) > 0, path
        elif path.suffix == ".csv":
            lines = path.read_text().splitlines()
            assert lines and all(line.count(",") == lines[0].count(",") for line in lines), path
        elif path.suffix == ".yaml":
            import yaml

            assert isinstance(yaml.safe_load(path.read_text()), dict), path
    return names
