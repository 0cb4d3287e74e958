"""What the report knows about metrics and methods: labels, direction (higher or lower is
better), number formats, display names, and which methods are ablations of HiFA."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Pipeline steps of one run, in DAG order, with the file each step writes last (its
# completion marker) and the paths whose presence without the marker means "partial".
STEPS = ("train", "render", "depth", "mesh", "eval")
STEP_MARKERS = {
    "train": "train_summary.json",
    "render": "render/render.json",
    "depth": "depth/depth.json",
    "mesh": "mesh/mesh.json",
    "eval": "eval/metrics.json",
}
STEP_TRACES = {
    "train": ("config.yaml", "train_log.csv", "checkpoint.pt", "weights.pt", "validation"),
    "render": ("render",),
    "depth": ("depth",),
    "mesh": ("mesh",),
    "eval": ("eval",),
}
VIEW_KINDS = ("rgb", "textureless", "depth", "normal", "opacity")
# Columns of train_log.csv that are bookkeeping, not loss terms.
NON_LOSS_COLUMNS = ("step", "t", "lr", "grad_norm", "time_s")
# Loss columns worth a panel, in order of interest (others follow alphabetically).
CURVE_ORDER = ("loss", "latent", "sds", "image", "depth", "zvar", "z_entropy", "orientation", "opacity")


@dataclass(frozen=True)
class Metric:
    """One scalar column of the report."""

    key: str  # stable identifier: CSV column, JSON key ("clip_score/ViT-B-32")
    label: str  # short human label ("CLIP score (ViT-B/32)")
    latex: str  # LaTeX column header, arrow included
    higher_is_better: bool | None  # None: no "best" (costs, diagnostics)
    decimals: int | None = None  # None: three significant digits
    group: str = "other"  # "clip", "groundtruth", "train", "depth"
    headline: bool = False  # in the paper's main table and the page's first tables

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]

    def fmt(self, value: float | None, decimals: int | None = None) -> str:
        return format_number(value, self.decimals if decimals is None else decimals)


# key: (label, LaTeX header, higher is better, decimals, headline)
_GROUNDTRUTH = {
    "psnr": ("PSNR (dB)", "PSNR (dB)", True, 2, True),
    "ssim": ("SSIM", "SSIM", True, 3, True),
    "depth_mae": ("Depth MAE", "Depth MAE", False, 3, True),
    "mask_iou": ("Mask IoU", "Mask IoU", True, 3, False),
    "chamfer": ("Chamfer", "Chamfer", False, 4, True),
    "chamfer_fraction_of_extent": ("Chamfer / extent", "Chamfer / extent", False, 4, False),
    "fscore": ("F-score", "F-score", True, 3, True),
    "precision": ("Precision", "Precision", True, 3, False),
    "recall": ("Recall", "Recall", True, 3, False),
    "mesh_psnr": ("Mesh PSNR (dB)", "Mesh PSNR (dB)", True, 2, False),
}
_CLIP = {
    "clip_score": ("CLIP score", "CLIP score", True, 3, True),
    "clip_score_textureless": ("CLIP score (textureless)", "CLIP score textureless", True, 3, False),
    "clip_score_mesh": ("CLIP score (textured mesh)", "CLIP score mesh", True, 3, False),
    "r_precision_colour": ("R-precision (colour)", "R-prec.\\ colour", True, 3, True),
    "r_precision_textureless": ("R-precision (textureless)", "R-prec.\\ textureless", True, 3, True),
}
_TRAIN = {
    "heldout_psnr": ("Held-out PSNR at train end (dB)", "Held-out PSNR (dB)", True, 2, False),
    "wall_time_s": ("hifa train wall time (s)", "Wall time (s)", None, 0, False),
}
# Parameters recorded next to metrics: shown as notes, never averaged as results.
PARAMETER_KEYS = ("tau", "captions", "definition", "definitions", "views", "views_scored", "extent",
                  "fscore_fraction", "surface_points", "scene", "model", "estimator")
_SECTION_ORDER = {"groundtruth": 0, "clip": 1, "depth": 2, "train": 3, "other": 4}


def backbone_slug(name: str) -> str:
    """'ViT-B/32' -> 'ViT-B-32' (safe in JSON keys, CSV headers and file names)."""
    return re.sub(r"[^A-Za-z0-9@._-]+", "-", name).strip("-") or "clip"


def metric_for(key: str) -> Metric:
    """The Metric for a key; unknown keys get a generic one with an inferred direction."""
    base, _, backbone = key.partition("/")
    if key in _GROUNDTRUTH:
        label, latex, hib, dec, head = _GROUNDTRUTH[key]
        return Metric(key, label, latex_header(latex, hib), hib, dec, "groundtruth", head)
    if base in _CLIP and backbone:
        label, latex, hib, dec, head = _CLIP[base]
        return Metric(key, f"{label} {backbone}", latex_header(f"{latex} {latex_escape(backbone)}", hib), hib, dec, "clip", head)
    if key in _TRAIN:
        label, latex, hib, dec, head = _TRAIN[key]
        return Metric(key, label, latex_header(latex, hib), hib, dec, "train", head)
    group = "depth" if key.startswith("depth_") else "other"
    hib = infer_direction(key)
    label = f"Depth consistency ({key[6:].replace('_', ' ')})" if group == "depth" else key.replace("_", " ")
    return Metric(key, label, latex_header(latex_escape(label), hib), hib, None, group)


def infer_direction(key: str) -> bool | None:
    """Higher/lower is better from the name, or None when the name does not say."""
    name = key.lower()
    if any(word in name for word in ("error", "mae", "rmse", "loss", "chamfer", "dist", "abs_rel")):
        return False
    if any(word in name for word in ("psnr", "ssim", "score", "precision", "recall", "corr", "pearson", "accuracy", "delta")):
        return True
    return None


def sort_metrics(keys: list[str]) -> list[str]:
    """Ground truth first, then CLIP (by backbone), depth, training; stable within groups."""
    known = {k: i for i, k in enumerate([*_GROUNDTRUTH, *_CLIP, *_TRAIN])}

    def rank(key: str):
        metric = metric_for(key)
        base, _, backbone = key.partition("/")
        return (_SECTION_ORDER[metric.group], backbone, known.get(base, len(known)), key)

    return sorted(keys, key=rank)


def latex_header(text: str, higher_is_better: bool | None) -> str:
    arrow = {True: " $\\uparrow$", False: " $\\downarrow$", None: ""}[higher_is_better]
    return text + arrow


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def format_number(value: float | None, decimals: int | None = None) -> str:
    """Fixed decimals when given, else three significant digits; '—' for no value."""
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if decimals is not None:
        return f"{value:.{decimals}f}"
    if value == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{min(digits, 6)}f}"


def column_decimals(metric: Metric, values: list[float]) -> int:
    """One number of decimals for a whole column (papers align digits)."""
    if metric.decimals is not None:
        return metric.decimals
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 2
    return int(min(6, max(0, 2 - math.floor(math.log10(max(finite))))))


_NAMES = {"hifa": "HiFA", "dreamfusion": "DreamFusion", "hifa-fast": "HiFA (fast)", "hifa-1step": "HiFA (1-step denoise)"}


def method_label(method: str) -> str:
    """'hifa' -> 'HiFA', 'hifa-no-rgb' -> 'HiFA w/o rgb', others unchanged."""
    if method in _NAMES:
        return _NAMES[method]
    if method.startswith("hifa-no-"):
        return "HiFA w/o " + method[len("hifa-no-"):].replace("-", " ")
    if method.startswith("hifa-"):
        return "HiFA (" + method[len("hifa-"):].replace("-", " ") + ")"
    return method


def is_ablation(method: str) -> bool:
    """Variants of HiFA (hifa-*) belong to the ablation study, not the main comparison."""
    return method.startswith("hifa-")


def order_methods(methods: list[str], declared: list[str] | None = None) -> list[str]:
    """Declared order first (suite.json); otherwise HiFA, DreamFusion, other baselines, ablations."""
    declared = [m for m in (declared or []) if m in methods]
    rest = sorted(set(methods) - set(declared), key=lambda m: (m != "hifa", m != "dreamfusion", is_ablation(m), m))
    return declared + rest
