"""Matplotlib figures of a suite (Agg, no pyplot state): training curves, metric bars with
error bars, and image grids (prompts x methods) for the page and the paper."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # headless; harmless when already set

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from hifa.report.catalog import CURVE_ORDER, NON_LOSS_COLUMNS, method_label, metric_for  # noqa: E402
from hifa.report.collect import Run, Suite  # noqa: E402

FIXED_COLOURS = {"hifa": "#d1495b", "dreamfusion": "#3d7ab8"}
PALETTE = ("#edae49", "#00798c", "#66a182", "#8d6a9f", "#2e4057", "#c97c5d", "#7d8491", "#a3333d")
LINESTYLES = ("-", "--", ":", "-.")


def method_colours(methods: list[str]) -> dict[str, str]:
    others = iter(PALETTE * (1 + len(methods) // len(PALETTE)))
    return {m: FIXED_COLOURS.get(m) or next(others) for m in methods}


def save(fig: Figure, fmt: str, dpi: int = 150) -> bytes:
    """Figure as PNG or PDF bytes, without timestamps (reproducible output)."""
    buffer = io.BytesIO()
    metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None} if fmt == "png" else None
    fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
    return buffer.getvalue()


# --- training curves --------------------------------------------------------------------------
def curve_columns(suite: Suite, limit: int = 6) -> list[str]:
    present = {k for run in suite.runs.values() for row in run.curves for k, v in row.items() if v is not None}
    present -= set(NON_LOSS_COLUMNS)
    ordered = [k for k in CURVE_ORDER if k in present] + sorted(present - set(CURVE_ORDER))
    return ordered[:limit]


def smooth(values: np.ndarray) -> np.ndarray:
    window = max(1, len(values) // 20)
    if window == 1:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def curves_figure(suite: Suite) -> Figure | None:
    """One panel per loss term; colour = method, line style = prompt (one line per seed); light raw, bold smoothed."""
    columns = curve_columns(suite)
    if not columns:
        return None
    colours = method_colours(suite.methods)
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(4.4 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, column in zip(axes, columns):
        positive, labelled = True, set()
        for m in suite.methods:
            for i, slug in enumerate(suite.slugs):
                for run in suite.seed_runs(m, slug):  # seeds of a prompt share its line style and legend entry
                    rows = [r for r in run.curves if r.get(column) is not None and math.isfinite(r[column])]
                    if not rows:
                        continue
                    steps = np.array([r["step"] for r in rows])
                    values = np.array([r[column] for r in rows])
                    positive &= bool((values > 0).all())
                    style = LINESTYLES[i % len(LINESTYLES)]
                    ax.plot(steps, values, color=colours[m], alpha=0.18, linewidth=0.8, linestyle=style)
                    ax.plot(steps, smooth(values), color=colours[m], linewidth=1.6, linestyle=style,
                            label=f"{method_label(m)} · {slug}" if (m, slug) not in labelled else "_seed")
                    labelled.add((m, slug))
        if positive and ax.lines:
            lo, hi = (min(line.get_ydata().min() for line in ax.lines), max(line.get_ydata().max() for line in ax.lines))
            if lo > 0 and hi / lo > 100:
                ax.set_yscale("log")
        ax.set_title(column)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8, frameon=False)
    return fig


# --- metric bars -----------------------------------------------------------------------------
def metrics_figure(suite: Suite, keys: list[str] | None = None, methods: list[str] | None = None) -> Figure | None:
    """Bars: mean across prompts per method, error bars = standard error, dots = prompts."""
    methods = methods or suite.methods
    keys = [k for k in (keys or suite.metric_keys) if any(suite.aggregate(m, k) for m in methods)]
    if not keys:
        return None
    colours = method_colours(suite.methods)
    ncols = min(5 if len(methods) <= 3 else 3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(max(2.6, 0.75 * len(methods) + 1.0) * ncols, 2.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    x = np.arange(len(methods))
    for ax, key in zip(axes, keys):
        metric = metric_for(key)
        aggs = [suite.aggregate(m, key) for m in methods]
        means = [a.mean if a else np.nan for a in aggs]
        errs = [a.se if a and a.se is not None else 0.0 for a in aggs]
        ax.bar(x, means, yerr=errs, capsize=4, color=[colours[m] for m in methods], alpha=0.85, edgecolor="black", linewidth=0.5)
        for xi, agg in zip(x, aggs):
            if agg:
                jitter = np.linspace(-0.15, 0.15, len(agg.values)) if len(agg.values) > 1 else [0.0]
                ax.scatter(xi + np.asarray(jitter), list(agg.values.values()), s=12, color="black", zorder=3)
        tilt = len(methods) > 2
        ax.set_xticks(x, [method_label(m) for m in methods], rotation=20 if tilt else 0, ha="right" if tilt else "center", fontsize=8)
        ax.set_title(f"{metric.label} {metric.arrow}".strip(), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    return fig


# --- image grids -----------------------------------------------------------------------------
def pick(paths: list, k: int) -> list:
    """k items spread evenly over the list (all of them when there are at most k)."""
    if len(paths) <= k:
        return list(paths)
    return [paths[round(i * (len(paths) - 1) / (k - 1))] if k > 1 else paths[0] for i in range(k)]


def run_strip(run: Run, views: int = 2, size: int = 192) -> np.ndarray | None:
    """The run's RGB views side by side (falls back to final_views.png), as uint8 RGB."""
    paths = pick(run.views.get("rgb", []), views)
    images = []
    for path in paths or ([run.final_views] if run.final_views else []):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                scale = size / im.height
                images.append(np.asarray(im.resize((max(1, round(im.width * scale)), size), Image.Resampling.LANCZOS)))
        except OSError:
            continue
    return np.concatenate(images, axis=1) if images else None


def mesh_strip(run: Run, views: int = 2, size: int = 192) -> np.ndarray | None:
    """The first `views` of the run's textured-mesh preview (a row of 4 square views), as uint8 RGB."""
    if run.mesh_preview is None:
        return None
    try:
        with Image.open(run.mesh_preview) as im:
            im = im.convert("RGB")
            side = im.height
            im = im.crop((0, 0, min(im.width, views * side), side))
            return np.asarray(im.resize((max(1, round(im.width * size / side)), size), Image.Resampling.LANCZOS))
    except OSError:
        return None


def shown_run(suite: Suite, method: str, slug: str) -> Run:
    """The run a grid shows for (method, prompt): the first complete seed's, else the first seed's."""
    runs = suite.seed_runs(method, slug)
    return next((run for run in runs if run.status == "complete"), runs[0])


def grid_figure(suite: Suite, methods: list[str], views: int = 2, strip_of: Callable[[Run, int], np.ndarray | None] = run_strip) -> Figure | None:
    """Qualitative grid: a row per prompt, a column per method (with seeds: the first seed whose run is
    complete, named in the cell); marked when missing or failed. `strip_of` gives a cell's images (the renders,
    or `mesh_strip`: the textured mesh)."""
    if not methods:
        return None
    shown = {(s, m): shown_run(suite, m, s) for s in suite.slugs for m in methods}
    strips = {key: strip_of(run, views) for key, run in shown.items()}
    aspect = max((a.shape[1] / a.shape[0] for a in strips.values() if a is not None), default=float(views))
    cell_w, cell_h = 1.6 * aspect, 1.6
    fig = Figure(figsize=(cell_w * len(methods) + 1.6, cell_h * len(suite.slugs) + 0.5), layout="constrained")
    axes = fig.subplots(len(suite.slugs), len(methods), squeeze=False)
    for r, slug in enumerate(suite.slugs):
        for c, m in enumerate(methods):
            ax, run, strip = axes[r, c], shown[(slug, m)], strips[(slug, m)]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if strip is not None:
                ax.imshow(strip)
            else:
                ax.set_xlim(0, aspect)
                ax.set_ylim(0, 1)
                ax.set_facecolor("#eeeeee")
            if run.status != "complete" or strip is None:
                text = "failed" if run.failed else ("missing" if strip is None else "incomplete")
                colour = "#b00020" if run.failed else "#8a6d00"
                ax.text(0.5, 0.5 if strip is None else 0.08, text, transform=ax.transAxes, ha="center", va="center",
                        fontsize=9, color=colour, fontweight="bold", bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": colour})
            if suite.multi_seed and strip is not None:
                ax.text(0.01, 0.97, f"seed {run.seed}", transform=ax.transAxes, ha="left", va="top", fontsize=7, color="#333333",
                        bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
            if r == 0:
                ax.set_title(method_label(m), fontsize=11)
            if c == 0:
                ax.set_ylabel("\n".join(textwrap.wrap(suite.prompts[slug], 22)), fontsize=8, rotation=0, ha="right", va="center")
    return fig
