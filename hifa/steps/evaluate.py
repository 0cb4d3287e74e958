"""`hifa evaluate R`: CLIP score and R-precision per backbone, oracle-world scores, one metrics.json."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import hifa
from hifa.errors import HifaError
from hifa.evaluate import clip as clipm
from hifa.evaluate.mesh_views import textured_views
from hifa.io import finite, load_image, write_json_atomic
from hifa.provenance import package_version
from hifa.run_folder import load_config, read_marker, run_dir, step_dir
from hifa.steps.render import marker_cameras

SCHEMA = "hifa.metrics/1"
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "evaluate" / "metrics.schema.json"
CAPTIONS = Path("config") / "rprecision" / "object_centric_coco_val.txt"


@dataclass(frozen=True)
class EvaluateOptions:
    """CLIP backbones (empty: none), caption and suite prompt files, CLIP folder, geometry sampling."""

    clip_models: tuple[str, ...] = clipm.DEFAULT_BACKBONES
    captions: str | None = None
    prompts: str | None = None
    clip_dir: str | None = None
    surface_points: int = 100_000
    fscore_fraction: float = 0.01


def captions_file(path: str | None) -> Path:
    """The caption set: `path`, else config/rprecision/ under the working directory or the source checkout."""
    if path is not None:
        return Path(path)
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / CAPTIONS).is_file():
            return base / CAPTIONS
    raise HifaError(f"the R-precision caption set {CAPTIONS} was not found; pass --captions FILE")


def clip_metrics(
    options: EvaluateOptions, prompt: str, texts: list[str], true_index: int, render_folder: Path, files: dict, progress: bool,
    mesh_views: np.ndarray | None = None,
) -> tuple[dict, dict]:
    """Per backbone: CLIP score (colour, textureless, and the textured mesh's views when given) and R-precision; and the model ids."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results, ids = {}, {}
    for name in tqdm(options.clip_models, desc="clip", unit="model", disable=not progress, dynamic_ncols=True):
        model, preprocess = clipm.load_clip(name, device, options.clip_dir)
        colour = clipm.encode_images(model, preprocess, [render_folder / f for f in files["rgb"]], device)
        plain = clipm.encode_images(model, preprocess, [render_folder / f for f in files["textureless"]], device)
        prompt_emb = clipm.encode_texts(model, [prompt], device)
        captions = clipm.encode_texts(model, texts, device)
        key = Path(name).stem if Path(name).is_file() else name
        ids[key] = clipm.check_available(name, options.clip_dir)
        results[key] = {
            "model": ids[key],
            "clip_score": {**clipm.clip_score(colour, prompt_emb), "definition": clipm.CLIP_SCORE_DEFINITION},
            "clip_score_textureless": clipm.clip_score(plain, prompt_emb),
            **({"clip_score_mesh": {**clipm.clip_score(clipm.encode_images(model, preprocess, list(mesh_views), device), prompt_emb),
                                    "definition": clipm.MESH_CLIP_SCORE_DEFINITION}}
               if mesh_views is not None else {}),
            "r_precision": {
                "colour": clipm.r_precision(colour, captions, true_index),
                "textureless": clipm.r_precision(plain, captions, true_index),
                "captions": len(texts),
                "definition": clipm.R_PRECISION_DEFINITION,
            },
        }
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return results, ids


def depth_summary(run: Path) -> dict | None:
    """The depth step's consistency summary, or None when `hifa depth` has not run."""
    marker = run / "depth" / "depth.json"
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text())
    c = data["consistency"]
    return {"abs_rel": c["abs_rel"], "pearson": c["pearson"], "views_scored": c["views_scored"], "estimator": data["estimator"], "definition": c["definition"]}


def versions() -> dict[str, str | None]:
    """Versions of the code and of the packages that produce the numbers."""
    return {"hifa": hifa.__version__, "torch": torch.__version__, "clip-anytorch": package_version("clip-anytorch"), "numpy": np.__version__}


def validate(document: dict) -> None:
    """Check a metrics document against metrics.schema.json (a failure is a bug, not a user error)."""
    import jsonschema

    jsonschema.validate(document, json.loads(SCHEMA_FILE.read_text()))


def metric_items(metrics: dict) -> dict[str, float]:
    """The numbers worth tracking, as flat MLflow metric names (eval.*)."""
    flat: dict[str, float] = {}
    clean = lambda text: re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)  # noqa: E731
    for name, scores in metrics["clip"].items():
        flat[f"eval.clip_score.{clean(name)}"] = scores["clip_score"]["mean"]
        if "clip_score_mesh" in scores:
            flat[f"eval.clip_score_mesh.{clean(name)}"] = scores["clip_score_mesh"]["mean"]
        flat[f"eval.r_precision.{clean(name)}.colour"] = scores["r_precision"]["colour"]
        flat[f"eval.r_precision.{clean(name)}.textureless"] = scores["r_precision"]["textureless"]
    for key, value in (metrics["groundtruth"] or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"eval.{key}"] = value
    for key in ("abs_rel", "pearson"):
        if metrics["depth_consistency"] and metrics["depth_consistency"][key] is not None:
            flat[f"eval.depth_consistency.{key}"] = metrics["depth_consistency"][key]
    return {k: float(v) for k, v in flat.items() if v is not None and math.isfinite(float(v))}


def mesh_inputs(run: Path, step: int, oracle: bool, notes: list[str]) -> tuple[Path | None, Path | None]:
    """(mesh.ply, textured.glb or None) of R/mesh, made from the same step as the renders. The oracle world scores the
    mesh against the truth and needs it (an error otherwise); elsewhere a missing, older or damaged mesh is a note."""
    try:
        if not oracle and not (run / "mesh" / "mesh.json").is_file():
            raise HifaError(f"no mesh yet (run `hifa mesh {run}` first)")
        folder, marker = read_marker(run, "mesh")
        made = marker.get("step", step)
        if made != step:
            raise HifaError(f"{folder} was made from step {made}, the renders from step {step}: run `hifa mesh {run}` again")
        try:
            ply = folder / marker["files"]["ply"]
            textured = folder / marker["texture"]["files"]["glb"] if "texture" in marker else None
        except (KeyError, TypeError):
            raise HifaError(f"{folder / 'mesh.json'} does not list the mesh's files: run `hifa mesh {run}` again") from None
    except HifaError as exc:
        if oracle:
            raise
        notes.append(f"mesh scores left out: {exc}")
        return None, None
    if textured is None:
        notes.append("the mesh has no texture (made before textured meshes): no mesh_psnr or clip_score_mesh; run `hifa mesh` again")
    return ply, textured


def evaluate_run(run: str | Path, options: EvaluateOptions, out: str | Path | None = None, progress: bool = True) -> dict:
    """Score a rendered run into `out` (default R/eval); metrics.json is written last, then logged to MLflow."""
    from hifa.tracking import Tracker

    t0 = time.perf_counter()
    run = run_dir(run)
    config = load_config(run)
    render_folder, marker = read_marker(run, "render")
    oracle = config.prior.kind == "oracle"
    notes: list[str] = []
    mesh_file, textured_file = mesh_inputs(run, int(marker.get("step", 0)), oracle, notes)
    texts, true_index = [], 0
    if options.clip_models:
        suite = clipm.read_lines(options.prompts, "suite prompts") if options.prompts else []
        texts, true_index = clipm.caption_set(config.prompt, suite, clipm.read_lines(captions_file(options.captions), "caption"))
        for name in options.clip_models:  # fail before any work when a checkpoint is missing
            clipm.check_available(name, options.clip_dir)
    out = step_dir(run, "eval", out)
    mesh_views = None
    if textured_file is not None and (options.clip_models or oracle):
        try:
            mesh_views = textured_views(textured_file, marker_cameras(marker), int(marker["resolution"]), int(marker["resolution"]))
        except HifaError as exc:
            if oracle:
                raise
            notes.append(f"textured mesh scores left out: {exc}")
    clip_results, clip_ids = {}, {}
    if options.clip_models:
        clip_results, clip_ids = clip_metrics(options, config.prompt, texts, true_index, render_folder, marker["files"], progress, mesh_views)
    else:
        notes.append("CLIP metrics not computed (--clip-models none): clip is {}")
    groundtruth = None
    if oracle:
        from hifa.evaluate.truth import groundtruth_metrics

        rgb = torch.from_numpy(np.stack([load_image(render_folder / f) for f in marker["files"]["rgb"]]))
        with np.load(render_folder / marker["files"]["depth_npz"]) as arrays:
            depth, opacity = torch.from_numpy(arrays["depth"]), torch.from_numpy(arrays["opacity"])
        groundtruth = groundtruth_metrics(
            config.prompt, marker_cameras(marker), rgb, depth, opacity, mesh_file, options.surface_points, options.fscore_fraction, mesh_views
        )
    else:
        notes.append("ground-truth scores exist only in the oracle world: groundtruth is null")
    depth = depth_summary(run)
    if depth is None:
        notes.append("depth consistency not available: run `hifa depth` before `hifa evaluate`")
    tracker = Tracker.from_run_dir(run)
    metrics = finite({
        "schema": SCHEMA,
        "run": str(run),
        "prompt": config.prompt,
        "method": config.preset,
        "prior": config.prior.kind,
        "step": int(marker.get("step", 0)),
        "views": int(marker["cameras"]["views"]),
        "resolution": int(marker["resolution"]),
        "cameras": {k: v for k, v in marker["cameras"].items() if k != "azimuth_deg"},
        "clip": clip_results,
        "groundtruth": groundtruth,
        "depth_consistency": depth,
        "versions": versions(),
        "model_ids": {"prior": "oracle" if oracle else config.prior.model, "clip": clip_ids, "depth": None if depth is None else depth["estimator"].get("model") or depth["estimator"]["kind"]},
        "tracking": {"mlflow_run_id": tracker.run_id, "tracking_uri": tracker.tracking_uri} if tracker.run_id else None,
        "notes": notes,
        "wall_time_s": time.perf_counter() - t0,
    })
    validate(metrics)
    tracker.log_metrics(metric_items(metrics), metrics["step"])
    path = write_json_atomic(out / "metrics.json", metrics)
    tracker.log_artifact(path, "eval")
    return metrics
