"""`hifa train`: resolve the config, run the trainer with tracking, then final views, mesh and scores."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from hifa.cameras import orbit_cameras
from hifa.config import PriorConfig, TrainConfig, as_read_today
from hifa.configio import apply_overrides, from_dict, load_yaml, to_dict, trained_changes
from hifa.errors import ConfigError, HifaError, Terminated, clip, shorten
from hifa.evaluate.image import masked_abs_error, psnr
from hifa.guidance.stable_diffusion import DEFAULT_MODEL
from hifa.io import check_folder_path, save_image, write_json_atomic
from hifa.media import label_rows
from hifa.mesh import export_mesh, extract_mesh
from hifa.presets import oracle_world, preset
from hifa.provenance import ENVIRONMENT_FILE
from hifa.renderer import RayOptions
from hifa.run_folder import write_weights
from hifa.trainer import CHECKPOINT, Trainer

log = logging.getLogger(__name__)


def prior_config(spec: str) -> tuple[str, str | None]:
    """'oracle' or 'stable-diffusion[:model-id-or-path]' -> (kind, model)."""
    kind, _, model = spec.partition(":")
    if kind not in ("oracle", "stable-diffusion"):
        raise HifaError(f"unknown prior {spec!r}; use 'oracle' or 'stable-diffusion[:model-id-or-path]'")
    if kind == "oracle" and model:
        raise HifaError("the oracle prior takes no model (use --prior oracle)")
    return kind, (model or None)


def deep_merge(base: dict, update: dict) -> dict:
    """`update` laid over `base`, recursively (unknown keys survive to be rejected by from_dict)."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def nest_dotted(data: dict) -> dict:
    """{'renderer.num_coarse': 32} -> {'renderer': {'num_coarse': 32}}, so a YAML file takes the keys `--set` takes."""
    nested: dict = {}
    for key, value in data.items():
        value = nest_dotted(value) if isinstance(value, dict) else value
        head, dot, rest = str(key).partition(".")
        if dot:
            value, key = {rest: value}, head
            value = nest_dotted(value)
        nested[key] = deep_merge(nested[key], value) if isinstance(value, dict) and isinstance(nested.get(key), dict) else value
    return nested


# What the command line's own flags decide; a config file or --set may repeat them but not change them.
IDENTITY = {("preset",): "--method", ("prompt",): "--prompt", ("prior", "kind"): "--prior"}


def check_identity(before: dict, after: dict, where: str) -> None:
    """One line when `where` changed the method, the prompt or the kind of prior."""
    for path, flag in IDENTITY.items():
        old, new = before, after
        for depth, part in enumerate(path):
            if isinstance(old, dict) and not isinstance(new, dict):  # e.g. a file's `prior: null`: the section itself is wrong
                raise ConfigError(".".join(path[:depth]), f"expected a mapping of keys, got {clip(repr(new), 60)}")
            old, new = old.get(part) if isinstance(old, dict) else None, new.get(part)
        if new != old:
            key = ".".join(path)
            hint = f"use {flag} instead" if where == "--set" else f"drop {key} from the file ({flag} chooses it)"
            raise HifaError(f"{where} sets {key} to {shorten(str(new), 60)} but {flag} gives {shorten(str(old), 60)}; {hint}")


def resolve_config(
    method: str, prompt: str, prior: str = "stable-diffusion", budget: str = "cpu",
    config_file: str | None = None, overrides: list[str] | None = None,
) -> TrainConfig:
    """Preset -> world (oracle budget or real model) -> YAML file -> `--set` overrides, validated."""
    config = preset(method)
    kind, model = prior_config(prior)
    if kind == "oracle":
        config = oracle_world(config, budget)
    else:
        config = replace(config, prior=PriorConfig(kind="stable-diffusion", model=model or DEFAULT_MODEL))
    data = to_dict(replace(config, prompt=prompt))
    if config_file:
        merged = deep_merge(data, nest_dotted(load_yaml(config_file)))
        check_identity(data, merged, f"--config {config_file}")
        data = merged
    overridden = apply_overrides(data, overrides or [])
    check_identity(data, overridden, "--set")
    return from_dict(TrainConfig, overridden)


def make_tracker(config: TrainConfig, run_dir: Path, run_name: str, resuming: bool = False, environment: dict | None = None):
    """An MLflow tracker for the run (reopened when resuming a checkpoint) or a no-op one; `environment` (hifa.provenance)
    gives a new run's tags for the code's commit, the device and torch."""
    from hifa.tracking import RUN_FILE, NullTracker, Tracker, default_tracking_uri

    if not config.tracking.enabled:
        return NullTracker()
    uri = config.tracking.tracking_uri or default_tracking_uri()
    if resuming and (run_dir / RUN_FILE).is_file():
        return Tracker.from_run_dir(run_dir).write_in_background()
    # A run.json without a checkpoint is left by an attempt that failed before its first checkpoint,
    # perhaps with another config: its MLflow run keeps its FAILED status and this attempt gets its own.
    (run_dir / RUN_FILE).unlink(missing_ok=True)
    tags = {"preset": config.preset, "prompt": config.prompt, "seed": config.seed}
    if environment:
        code = environment["code"]
        tags.update({"hifa.version": code["hifa"], "hifa.device": environment["device"]["name"], "torch": environment["packages"]["torch"]})
        if code["commit"]:  # MLflow's own tag for the source's commit; whether tracked files differed from it, apart
            tags.update({"mlflow.source.git.commit": code["commit"], "hifa.modified": str(bool(code["modified"])).lower()})
    return Tracker.start(uri, config.tracking.experiment, run_name, to_dict(config), tags, run_dir).write_in_background()


def config_changes(config: TrainConfig, saved: str | Path) -> list[str]:
    """Dotted keys where `config` differs from a run's saved config.yaml (tracking and mesh aside); ['(unreadable)'] if it
    cannot be read. Keys an older config.yaml lacks count as their defaults (a setting added since is no change)."""
    try:
        old = load_yaml(saved)
    except HifaError:
        return ["(unreadable)"]
    return trained_changes(as_read_today(old), to_dict(config))


def check_prompt(config: TrainConfig) -> None:
    """A one-line error for an empty prompt, or one the oracle world's catalogue does not know."""
    if not config.prompt.strip():
        raise HifaError("the prompt is empty; give the text to generate from (--prompt)")
    if config.prior.kind == "oracle":
        from hifa.guidance.oracle import catalogue_entry

        catalogue_entry(config.prompt)  # the oracle world knows its catalogue's prompts only


def check_inputs(config: TrainConfig, run_dir: Path, resume: bool) -> None:
    """Fail before anything is written (run folder, MLflow run) on an empty or unknown prompt or a taken folder."""
    check_prompt(config)
    check_folder_path(run_dir)
    saved = run_dir / "config.yaml"
    if saved.is_file():  # e.g. two prompts with one slug: never mix two assets in one folder
        try:
            prompt = load_yaml(saved).get("prompt")
        except HifaError:
            prompt = None
        if isinstance(prompt, str) and prompt != config.prompt:
            raise HifaError(f"{run_dir} holds a run for another prompt ({shorten(prompt, 60)}); choose another --out (or delete the folder)")
    if (run_dir / CHECKPOINT).is_file() and not resume:
        raise HifaError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another --out")


def run_training(config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train into run_dir; on success write final views, the mesh and train_summary.json."""
    run_dir = Path(run_dir)
    check_inputs(config, run_dir, resume)
    t0 = time.perf_counter()
    # The trainer loads the models first: a model that is not available leaves no run folder and no MLflow run.
    trainer = Trainer(config, run_dir, progress=progress)
    resuming = resume and (run_dir / CHECKPOINT).is_file()
    if resume and not resuming:  # e.g. a mistyped --out: say so rather than start over silently
        log.warning("%s holds no checkpoint to resume; training starts at step 0", run_dir)
    (run_dir / "FAILED").unlink(missing_ok=True)  # the workflow's mark of an earlier attempt that failed
    trainer.tracker = tracker = make_tracker(config, run_dir, run_dir.name, resuming, trainer.environment)
    status = "FAILED"
    try:
        summary = trainer.train()
        summary.update(finalize(trainer, tracker))
        summary["wall_time_s"] = time.perf_counter() - t0
        summary.update(preset=config.preset, prompt=config.prompt, prior=config.prior.kind, iterations=config.iterations)
        tracker.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, trainer.step)
        write_json_atomic(run_dir / "train_summary.json", summary)
        status = "FINISHED"
    except (Terminated, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        tracker.set_terminated(status)  # also writes the metrics still queued
    return summary


def evaluation_state(trainer: Trainer) -> dict:
    """The renderer's state dict with the EMA shadows in place of the parameters (what load_run makes of a checkpoint)."""
    state = trainer.renderer.state_dict()
    if trainer.ema is not None:
        for (name, _), shadow in zip(trainer.renderer.named_parameters(), trainer.ema):
            state[name] = shadow
    return state


@torch.no_grad()
def finalize(trainer: Trainer, tracker) -> dict:
    """The evaluation weights (R/weights.pt), final views (white background), the mesh, and in the oracle world
    scores against ground truth."""
    cfg, run_dir = trainer.config, trainer.run_dir
    write_weights(run_dir, evaluation_state(trainer), trainer.step, cfg)
    renderer = trainer.eval_renderer()
    renderer.eval()
    cams = orbit_cameras(cfg.eval_views, start_azimuth_deg=180.0 / cfg.eval_views)
    views = renderer.render_views(cams, cfg.val_resolution, cfg.val_resolution, RayOptions(background=torch.ones(3)))
    views = {key: value.cpu() for key, value in views.items()}
    rows = [torch.cat(list(views["image"]), dim=1)]
    results: dict = {}
    if cfg.prior.kind == "oracle":
        from hifa.guidance.oracle import scene_for_prompt
        from hifa.scenes import GroundTruthRenderer

        truth = GroundTruthRenderer(scene_for_prompt(cfg.prompt)).render(cams, cfg.val_resolution, cfg.val_resolution)
        results["heldout_psnr"] = psnr(views["image"], truth.rgb)
        results["heldout_depth_mae"] = masked_abs_error(views["depth"], truth.depth, truth.mask)
        rows.insert(0, torch.cat(list(truth.rgb), dim=1))
    names = ["ground truth", "render"] if len(rows) == 2 else ["render"]
    save_image(label_rows(torch.cat(rows, dim=0), names), run_dir / "final_views.png")
    tracker.log_artifact(run_dir / "final_views.png")
    if (run_dir / ENVIRONMENT_FILE).is_file():  # absent from a run trained before hifa recorded it
        tracker.log_artifact(run_dir / ENVIRONMENT_FILE)
    try:
        mesh = extract_mesh(renderer.field, cfg.mesh)
        path = export_mesh(mesh, run_dir / "mesh.glb")
        results["mesh_faces"], results["mesh_threshold"] = int(len(mesh.faces)), float(mesh.threshold)
        tracker.log_artifact(path)
    except HifaError as exc:  # an empty field has no surface: report it, keep the run
        results["mesh_error"] = str(exc)
    return results
