"""A training run folder (what `hifa train --out R` writes): loading the trained field and step markers."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import torch

from hifa.config import TrainConfig, as_read_today
from hifa.configio import from_dict, load_yaml, to_dict, trained_changes
from hifa.errors import HifaError
from hifa.io import output_folder, remove_stale_temporaries, write_bytes_atomic
from hifa.mlflow_uri import foreign_store
from hifa.step_markers import COMMANDS, STEPS
from hifa.renderer import Renderer

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
# The trained renderer's evaluation weights alone (EMA applied, no optimiser state), written when a training
# finishes: what render, depth, mesh and evaluate need, at a fraction of the checkpoint's size. DVC versions
# it and ignores checkpoint.pt (.dvcignore), so a `dvc pull` elsewhere brings runs that these steps can read.
WEIGHTS_FILE = "weights.pt"
WEIGHTS_FORMAT = "hifa.weights/1"
log = logging.getLogger(__name__)


def run_dir(path: str | Path) -> Path:
    """The run folder, or a one-line error when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise HifaError(f"run folder {path} does not exist; train one first with `hifa train --out {path}`")
    if not (path / CONFIG_FILE).is_file():
        raise HifaError(f"{path} is not a training run folder (no {CONFIG_FILE}); give the --out folder of `hifa train`")
    return path


def load_config(path: str | Path) -> TrainConfig:
    """The resolved TrainConfig a run was trained with."""
    return from_dict(TrainConfig, load_yaml(run_dir(path) / CONFIG_FILE))


def load_state(source: Path) -> dict:
    """A checkpoint or weights file's contents (tensors and containers only), or a one-line error."""
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)  # tensors and containers only: no code from a file
    except Exception as exc:
        raise HifaError(f"cannot read {source}: {exc.__class__.__name__} (truncated or corrupt)") from None
    if not isinstance(state, dict) or "renderer" not in state:
        raise HifaError(f"{source} is not a hifa training checkpoint (no renderer state); train the run again")
    return state


def load_checkpoint(path: str | Path, config: TrainConfig | None = None) -> dict:
    """The run's trained state: weights.pt when present (it exists only while the latest training is finished:
    a training with steps left deletes it), else checkpoint.pt; a one-line error when neither is there or
    readable, or when the file was trained with another config than R/config.yaml."""
    folder = run_dir(path)
    ckpt, weights = folder / CHECKPOINT_FILE, folder / WEIGHTS_FILE
    source = weights if weights.is_file() else ckpt
    if not source.is_file():
        raise HifaError(f"{ckpt} is missing: the run has not saved a checkpoint yet (train it, or resume with `hifa train --resume`); "
                        f"a finished run's {WEIGHTS_FILE} would do too")
    state = load_state(source)
    changed = config_drift(state.get("config"), config or load_config(folder))
    if changed:  # e.g. `dvc checkout` of an older config.yaml and weights.pt beside a newer local checkpoint.pt
        raise HifaError(f"{source} was trained with another config than {folder / CONFIG_FILE} (differs in {', '.join(changed[:4])}"
                        f"{', ...' if len(changed) > 4 else ''}); was config.yaml edited, or is the file left from another version of the run?")
    return state


def config_drift(saved: object, config: TrainConfig) -> list[str]:
    """Dotted keys (tracking and mesh aside) where a file's saved config differs from the run's; [] when it saved none."""
    if not isinstance(saved, dict):
        return []
    read = as_read_today(saved)
    if read is saved:  # a config of another code version: nothing to compare key by key
        return []
    return trained_changes(read, to_dict(config))


def write_weights(path: str | Path, renderer_state: dict, step: int, config: TrainConfig) -> Path:
    """R/weights.pt: the evaluation weights of the renderer at `step` and the config they were trained with (atomic)."""
    buffer = io.BytesIO()
    weights = {k: v.detach().cpu() for k, v in renderer_state.items()}
    torch.save({"format": WEIGHTS_FORMAT, "step": int(step), "config": to_dict(config), "renderer": weights}, buffer)
    return write_bytes_atomic(Path(path) / WEIGHTS_FILE, buffer.getvalue())


@torch.no_grad()
def load_run(path: str | Path, device: str | torch.device | None = None) -> tuple[TrainConfig, Renderer, int]:
    """(config, evaluation renderer, trained step): the EMA weights where the run keeps an EMA, as `finalize` uses."""
    from hifa.run_setup import build_renderer

    config = load_config(path)
    state = load_checkpoint(path, config)
    renderer = build_renderer(config)
    try:
        renderer.load_state_dict(state["renderer"])
    except (KeyError, RuntimeError) as exc:
        raise HifaError(f"the trained weights in {path} ({WEIGHTS_FILE} or {CHECKPOINT_FILE}) do not match its config.yaml "
                        f"({exc.__class__.__name__}); was config.yaml edited?") from None
    ema = state.get("ema")
    if ema is not None:  # Trainer.eval_renderer: the EMA shadows replace the parameters
        for shadow, param in zip(ema, renderer.parameters()):
            param.copy_(shadow)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return config, renderer.to(device).eval(), int(state.get("step", 0))


def step_dir(run: Path, step: str, out: str | Path | None) -> Path:
    """Where a step writes: `out` or R/<step>; its old marker is removed first, so it only ever marks a finished step."""
    folder = output_folder(Path(out) if out is not None else run / step)
    (folder / STEPS[step]).unlink(missing_ok=True)
    remove_stale_temporaries(folder, recursive=False)  # left by an earlier run of the step that was killed mid-write
    return folder


def clear_outputs(folder: Path, patterns: list[str]) -> None:
    """Delete a step's earlier outputs matching glob patterns (e.g. views beyond a new, smaller count)."""
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path.is_file():
                path.unlink()


def read_marker(run: Path, step: str) -> tuple[Path, dict]:
    """(R/<step>, its marker's contents) of a finished step, or a one-line error saying which command to run first."""
    folder = run / step
    marker = folder / STEPS[step]
    if not marker.is_file():
        raise HifaError(f"{marker} is missing: run `{COMMANDS[step]} {run}` first")
    try:
        return folder, json.loads(marker.read_text())
    except ValueError:
        raise HifaError(f"{marker} is not valid JSON; run `{COMMANDS[step]} {run}` again") from None


def local_artifact_dir(record: dict) -> Path | None:
    """The run's artifact folder when its run.json record names a local (file:) artifact store, else None."""
    uri = record.get("artifact_uri", "")
    parsed = urlparse(uri) if isinstance(uri, str) else None
    if parsed is None or parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parsed.path))


def log_artifacts(run: Path, paths: list[Path], artifact_path: str) -> None:
    """Copy files into the run's MLflow artifacts when the run is tracked (R/run.json); never raises."""
    if not (run / "run.json").is_file():
        return
    try:
        record = json.loads((run / "run.json").read_text())
        record = record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        record = {}
    recorded = str(record.get("tracking_uri", ""))
    if (current := foreign_store(recorded)) is not None:  # never write into another checkout's store
        log.warning("MLflow artifacts skipped: %s was tracked in %s, this job writes to %s", run, recorded, current)
        return
    local = local_artifact_dir(record)
    if local is not None:
        # What MLflow's local artifact repository does, without its ~3 s import in every render and mesh job.
        try:
            (local / artifact_path).mkdir(parents=True, exist_ok=True)
            for path in paths:
                target = local / artifact_path / Path(path).name
                partial = target.with_name(f".{target.name}.tmp")
                shutil.copy2(path, partial)
                os.replace(partial, target)  # a reader never sees half a file
            return
        except OSError as exc:
            log.warning("could not copy artifacts into %s (%s); trying through MLflow", local, exc)
    from hifa.tracking import Tracker

    tracker = Tracker.from_run_dir(run)
    for path in paths:
        tracker.log_artifact(path, artifact_path)
