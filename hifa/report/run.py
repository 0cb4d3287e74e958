"""One run folder of a suite read into a typed record (steps, failure, metrics, images, curves),
never raising on bad or missing files; and the mean ± standard error used throughout the report."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hifa.report.catalog import PARAMETER_KEYS, STEP_MARKERS, STEP_TRACES, STEPS, VIEW_KINDS, backbone_slug
from hifa.provenance import read_sessions
from hifa.run_names import run_name
from hifa.step_markers import stale_steps

FAILED_MARKER = "FAILED"
NOTE_SKIP = ("scene", "model", "estimator")  # per-run identifiers, not suite-level notes


@dataclass(frozen=True)
class Value:
    """A run's value of a metric; `se` and `n` when it is itself a mean over views."""

    mean: float
    se: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class Aggregate:
    """A method's metric across prompts: mean, standard error of the mean, and the inputs."""

    mean: float
    se: float | None  # None when fewer than two prompts have a value
    n: int
    values: dict[str, float]  # slug -> value


@dataclass
class Run:
    method: str
    slug: str
    path: Path
    seed: int = 0
    prompt: str = ""
    steps: dict[str, str] = field(default_factory=dict)  # step -> done | partial | missing | failed | stale
    made_at: dict[str, int] = field(default_factory=dict)  # step -> training step its outputs were made from
    failure: str | None = None  # reason from a FAILED marker
    metrics: dict[str, Value] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    views: dict[str, list[Path]] = field(default_factory=dict)  # kind -> per-view PNGs
    turntable: Path | None = None
    contact_sheet: Path | None = None
    final_views: Path | None = None
    validation: list[Path] = field(default_factory=list)
    meshes: list[Path] = field(default_factory=list)
    mesh_preview: Path | None = None
    curves: list[dict[str, float | None]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # metric key -> definition / parameter
    versions: dict = field(default_factory=dict)
    environment: list[dict] = field(default_factory=list)  # the training's sessions (hifa.provenance), oldest first
    problems: list[str] = field(default_factory=list)  # unreadable files and the like

    @property
    def name(self) -> str:
        """The run folder's name: the slug, with `.seed<N>` for a seed other than 0."""
        return run_name(self.slug, self.seed)

    @property
    def failed(self) -> bool:
        return self.failure is not None or "failed" in self.steps.values()

    @property
    def missing(self) -> list[str]:
        """Steps without their completion marker ('render (partial)' when it started)."""
        return [s + (" (partial)" if self.steps.get(s) == "partial" else "") for s in STEPS if self.steps.get(s) in ("missing", "partial")]

    @property
    def stale(self) -> list[str]:
        """Steps made from an earlier checkpoint than the finished training (a resumed run trained on)."""
        return [s for s in STEPS if self.steps.get(s) == "stale"]

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        return "complete" if not self.missing and not self.stale else "incomplete"

    @property
    def badge(self) -> str:
        """One line for humans: 'complete', 'missing: render, eval', 'failed: <reason>'."""
        if self.failed:
            steps = [s for s in STEPS if self.steps.get(s) == "failed"]
            where = f" at {', '.join(steps)}" if steps else ""
            reason = self.failure or ""
            for step in steps:  # "mesh: CUDA out of memory" at mesh -> "failed at mesh: CUDA out of memory"
                reason = reason.removeprefix(f"{step}:").strip()
            return f"failed{where}" + (f": {reason}" if reason else "")
        parts = ["missing: " + ", ".join(self.missing)] if self.missing else []
        if self.stale:
            made = sorted({self.made_at[s] for s in self.stale})
            parts.append(f"stale: {', '.join(self.stale)} (made at step {', '.join(map(str, made))}; trained to step {self.summary.get('steps')})")
        return "; ".join(parts) or "complete"



def aggregate(values: dict[str, float]) -> Aggregate | None:
    """Mean and standard error (sample std / sqrt(n)) of the given values."""
    if not values:
        return None
    xs = list(values.values())
    n = len(xs)
    mean = sum(xs) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n) if n > 1 else None
    return Aggregate(mean, se, n, dict(values))




# --- reading files --------------------------------------------------------------------------
def read_json(path: Path, problems: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problems.append(f"unreadable {path.name}: {exc.__class__.__name__}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} is not a JSON object")
        return None
    return data


def read_curves(path: Path, problems: list[str]) -> list[dict[str, float | None]]:
    """train_log.csv as rows of floats (blank or non-numeric cells become None)."""
    if not path.is_file():
        return []
    rows = []
    try:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                parsed = {}
                for key, cell in row.items():
                    if key is None:
                        continue
                    try:
                        parsed[key] = float(cell) if cell not in (None, "") else None
                    except ValueError:
                        parsed[key] = None
                if parsed.get("step") is not None:
                    rows.append(parsed)
    except (OSError, csv.Error) as exc:
        problems.append(f"unreadable train_log.csv: {exc.__class__.__name__}")
    return rows


def _number(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def to_value(raw) -> Value | None:
    """A number, a list of per-view numbers, or {"mean", "se"?, "n"?, per-view list?}."""
    if _number(raw) is not None:
        return Value(_number(raw))
    if isinstance(raw, list):
        xs = [_number(x) for x in raw]
        xs = [x for x in xs if x is not None]
        agg = aggregate({str(i): x for i, x in enumerate(xs)})
        return Value(agg.mean, agg.se, agg.n) if agg else None
    if isinstance(raw, dict):
        mean = _number(raw.get("mean", raw.get("value")))
        if mean is None:
            for key in ("per_view", "values", "views"):
                if isinstance(raw.get(key), list):
                    return to_value(raw[key])
            return None
        per_view = next((raw[k] for k in ("per_view", "values") if isinstance(raw.get(k), list)), None)
        counted = sum(_number(x) is not None for x in per_view) if per_view else 0  # null views are not views scored
        n = raw["n"] if isinstance(raw.get("n"), int) and not isinstance(raw["n"], bool) else (counted or None)
        return Value(mean, _number(raw.get("se")), n)
    return None


def parse_eval(payload: dict, run: Run) -> None:
    """eval/metrics.json (schema hifa.metrics/1) into run.metrics and run.notes."""
    for backbone, entry in (payload.get("clip") or {}).items():
        if not isinstance(entry, dict):
            continue
        bb = backbone_slug(str(backbone))
        for name in ("clip_score", "clip_score_textureless", "clip_score_mesh"):
            score = entry.get(name)
            if (value := to_value(score)) is not None:
                run.metrics[f"{name}/{bb}"] = value
            if isinstance(score, dict) and score.get("definition"):
                run.notes[f"{name}/{bb}"] = str(score["definition"])
        rp = entry.get("r_precision")
        if isinstance(rp, dict):
            for kind in ("colour", "textureless"):
                if (value := to_value(rp.get(kind))) is not None:
                    run.metrics[f"r_precision_{kind}/{bb}"] = value
            note = str(rp.get("definition") or "") + (f" ({rp['captions']} captions)" if isinstance(rp.get("captions"), int) else "")
            if note.strip():
                run.notes[f"r_precision_colour/{bb}"] = run.notes[f"r_precision_textureless/{bb}"] = note
        elif (value := to_value(rp)) is not None:
            run.metrics[f"r_precision_colour/{bb}"] = value
    truth = payload.get("groundtruth") or {}
    truth = truth if isinstance(truth, dict) else {}
    if isinstance(truth.get("definitions"), dict):
        run.notes.update({str(k): str(v) for k, v in truth["definitions"].items()})
    for key, raw in truth.items():
        if key in PARAMETER_KEYS or key.endswith(("_per_view", "_views")):
            if not isinstance(raw, (list, dict)) and key not in NOTE_SKIP and key not in run.notes:  # a definition wins over a value
                run.notes[key] = str(raw)
            continue
        if (value := to_value(raw)) is not None:
            run.metrics[key] = value
    if isinstance(payload.get("versions"), dict):
        run.versions = payload["versions"]


def step_state(root: Path, step: str, problems: list[str]) -> str:
    marker = root / STEP_MARKERS[step]
    folder = marker.parent if marker.parent != root else None
    if folder is not None and (folder / FAILED_MARKER).exists():
        return "failed"
    if marker.is_file():
        if read_json(marker, problems) is not None:
            return "done"
        return "partial"
    return "partial" if any((root / trace).exists() for trace in STEP_TRACES[step]) else "missing"


def failure_reason(root: Path) -> str | None:
    """The first line of a FAILED marker in the run folder or one of its step folders."""
    for marker in [root / FAILED_MARKER, *sorted(root.glob(f"*/{FAILED_MARKER}"))]:
        if marker.is_file():
            try:
                lines = [ln.strip() for ln in marker.read_text(errors="replace").splitlines() if ln.strip()]
            except OSError:
                lines = []
            return lines[0][:200] if lines else ""
    return None


def mark_stale(root: Path, run: Run) -> None:
    """Mark done steps whose marker names another training step than train_summary.json (hifa train --resume
    trained on after them; Snakemake re-runs them, the CLI does not)."""
    trained = run.summary.get("steps")
    if run.steps.get("train") != "done" or not isinstance(trained, int) or isinstance(trained, bool):
        return
    for step, made in stale_steps(root, trained).items():
        if run.steps.get(step) == "done":
            run.steps[step], run.made_at[step] = "stale", made


def read_run(root: Path, method: str, slug: str, seed: int = 0) -> Run:
    """Everything the report shows about one run; never raises on bad or missing files."""
    run = Run(method, slug, root, seed)
    problems = run.problems
    run.steps = {step: step_state(root, step, problems) for step in STEPS}
    run.failure = failure_reason(root)
    if run.failure is not None and "failed" not in run.steps.values():
        first_undone = next((s for s in STEPS if run.steps[s] != "done"), None)
        if first_undone is not None:  # a run-level FAILED marker: the first unfinished step failed
            run.steps[first_undone] = "failed"
    run.summary = read_json(root / STEP_MARKERS["train"], problems) or {}
    mark_stale(root, run)
    for key in ("heldout_psnr", "wall_time_s"):
        if _number(run.summary.get(key)) is not None:
            run.metrics[key] = Value(float(run.summary[key]))
    # Scores of stale steps describe an earlier field: shown as stale, kept out of the tables.
    depth = read_json(root / STEP_MARKERS["depth"], problems) or {} if run.steps["depth"] != "stale" else {}
    if isinstance(depth.get("consistency"), dict):
        for key, raw in depth["consistency"].items():
            if key not in PARAMETER_KEYS and (value := to_value(raw)) is not None:
                run.metrics[f"depth_{key}"] = value
        if depth["consistency"].get("definition"):
            run.notes["depth consistency"] = str(depth["consistency"]["definition"])
    evaluation = read_json(root / STEP_MARKERS["eval"], problems) or {} if run.steps["eval"] != "stale" else {}
    parse_eval(evaluation, run)
    run.prompt = str(run.summary.get("prompt") or evaluation.get("prompt") or config_prompt(root / "config.yaml") or "")
    render = root / "render"
    run.views = {kind: sorted((render / kind).glob("*.png")) for kind in VIEW_KINDS}
    run.turntable = next((p for p in (render / "turntable.gif", render / "turntable.mp4") if p.is_file()), None)
    run.contact_sheet = _file(render / "contact_sheet.png")
    run.final_views = _file(root / "final_views.png")
    run.validation = sorted((root / "validation").glob("step_*.png"))
    names = ("textured.glb", "textured.obj", "mesh.glb", "mesh.obj", "mesh.ply")
    run.meshes = [p for p in (root / "mesh" / name for name in names) if p.is_file()]
    if not run.meshes and (root / "mesh.glb").is_file():
        run.meshes = [root / "mesh.glb"]
    run.mesh_preview = _file(root / "mesh" / "preview.png")
    run.curves = read_curves(root / "train_log.csv", problems)
    run.environment = read_sessions(root)
    return run


def _file(path: Path) -> Path | None:
    return path if path.is_file() else None


def config_prompt(path: Path) -> str | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return str(data["prompt"]) if isinstance(data, dict) and data.get("prompt") else None


def mesh_label(path: Path) -> str:
    """A mesh link's text: its format, and 'textured' for the UV-textured copy."""
    kind = path.suffix.lstrip(".")
    return f"textured {kind}" if path.stem == "textured" else kind
