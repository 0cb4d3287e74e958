"""`hifa status SUITE`: where a suite's runs stand, from their folders alone, while it runs: each
run's training step out of its iterations, its pace and time to go, and which later steps are done.
Torch-free, so it answers in a second on a login node."""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from hifa.errors import HifaError
from hifa.report.catalog import STEP_MARKERS, STEPS, method_label
from hifa.report.collect import Suite, collect
from hifa.report.run import Run

PACE_ROWS = 10  # the time to go comes from the pace over the last this-many log rows
STALLED_AFTER_S = 30 * 60  # a training whose log has not changed for this long is not said to be running
MARKS = {"done": "✓", "failed": "✗", "partial": "…", "stale": "stale", "missing": "·"}


@dataclass(frozen=True)
class Training:
    """What a run folder says about its training."""

    state: str  # done | failed | damaged (an unreadable train_summary.json) | running | stopped | waiting
    step: int | None  # last logged step
    iterations: int | None
    seconds_per_step: float | None
    idle_s: float | None  # since the log or checkpoint last changed

    @property
    def eta_s(self) -> float | None:
        """Time to go: the steps left at the run's pace, less the time since the log was written (it is
        written at checkpoints, so the training is that much further)."""
        if self.state != "running" or None in (self.step, self.iterations, self.seconds_per_step):
            return None
        return max(0.0, max(0, self.iterations - self.step) * self.seconds_per_step - (self.idle_s or 0.0))


def iterations_of(run: Run) -> int | None:
    try:
        data = yaml.safe_load((run.path / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    value = data.get("iterations") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def recent_pace(rows: list[dict], window: int = PACE_ROWS) -> float | None:
    """Seconds per step over the last `window` logged rows (time_s runs on across resumes, without the time in
    between), so a resume on other hardware or a slow start does not skew the time to go; the whole run's
    mean when the window spans no steps."""
    if not rows:
        return None
    first, last = rows[max(0, len(rows) - window)], rows[-1]
    if last["step"] > first["step"] and last["time_s"] >= first["time_s"]:
        return (last["time_s"] - first["time_s"]) / (last["step"] - first["step"])
    return last["time_s"] / last["step"]


def training_of(run: Run, now: float | None = None) -> Training:
    """The training's state: done, failed, damaged, running (log changed in the last 30 min), stopped, or waiting (no trace)."""
    iterations = iterations_of(run)
    rows = [r for r in run.curves if r.get("step")]
    step = int(rows[-1]["step"]) if rows else None
    timed = [r for r in rows if r.get("time_s") and math.isfinite(r["time_s"]) and math.isfinite(r["step"])]
    pace = recent_pace(timed)
    # A training writes config.yaml when it starts, validation images and its log and checkpoint as it goes.
    traces = [p for p in (run.path / n for n in ("config.yaml", "train_log.csv", "checkpoint.pt", "validation")) if p.exists()]
    idle = (now or time.time()) - max(p.stat().st_mtime for p in traces) if traces else None
    if run.steps.get("train") == "done":
        state = "done"
    elif run.steps.get("train") == "failed":
        state = "failed"
    elif (run.path / STEP_MARKERS["train"]).is_file():  # there but unreadable: the training ended, its record did not survive
        state = "damaged"
    elif idle is None and run.steps.get("train") == "missing":
        state = "waiting"
    else:
        state = "running" if idle is not None and idle < STALLED_AFTER_S else "stopped"
    return Training(state, step, iterations, pace, idle)


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def training_text(t: Training) -> str:
    """One cell: '✓ 900', '450/900 (50 %), ETA 6 min', 'stopped at 300/900 (2.1 h ago)', '·'."""
    if t.state == "done":
        return f"✓ {t.step}" if t.step else "✓"
    if t.state == "failed":
        return "✗ failed" + (f" at {t.step}" if t.step else "")
    if t.state == "waiting":
        return "·"
    if t.state == "damaged":
        return f"✗ {STEP_MARKERS['train']} unreadable" + (f" (log at {t.step})" if t.step else "")
    where = f"{t.step or 0}/{t.iterations}" if t.iterations else f"step {t.step or 0}"
    if t.iterations and t.step:
        where += f" ({100 * t.step / t.iterations:.0f} %)"
    if t.state == "running":
        return where + (f", ETA {duration(t.eta_s)}" if t.eta_s is not None else "")
    return f"stopped at {where}" + (f", {duration(t.idle_s)} ago" if t.idle_s is not None else "")


def device_of(run: Run) -> str | None:
    """The device of the run's latest training session (environment.json), if recorded."""
    device = run.environment[-1].get("device") if run.environment else None
    return str(device["name"]) if isinstance(device, dict) and device.get("name") else None


@dataclass(frozen=True)
class Status:
    suite: Suite
    trainings: dict[tuple[str, str, int], Training]

    def rows(self) -> list[list[str]]:
        """Method, prompt, [seed], train, then a mark per later step; a failed run ends with its reason."""
        out = []
        for (method, slug, seed), run in self.suite.runs.items():
            row = [method_label(method), self.suite.prompts[slug]] + ([str(seed)] if self.suite.multi_seed else [])
            row.append(training_text(self.trainings[(method, slug, seed)]))
            row += [MARKS.get(run.steps.get(step, "missing"), "?") for step in STEPS[1:]]
            out.append(row + ([run.failure] if run.failure else []))
        return out

    def totals(self) -> str:
        """'trainings: 5 done, 2 running (ETA 14 min), 1 stopped, 1 waiting; evaluations: 4/9; on NVIDIA H100 80GB HBM3 (7)'
        (the devices of the runs' latest training sessions, where recorded)."""
        states = [t.state for t in self.trainings.values()]
        parts = [f"{states.count(s)} {s}" for s in ("done", "running", "stopped", "failed", "damaged", "waiting") if states.count(s)]
        etas = [t.eta_s for t in self.trainings.values() if t.eta_s is not None]
        if etas:
            parts[[p.endswith(" running") for p in parts].index(True)] += f" (longest ETA {duration(max(etas))})"
        evaluated = sum(1 for run in self.suite.runs.values() if run.steps.get("eval") == "done")
        devices = Counter(d for run in self.suite.runs.values() if (d := device_of(run)))
        where = f"; on {', '.join(f'{name} ({n})' for name, n in devices.most_common())}" if devices else ""
        return f"trainings: {', '.join(parts)}; evaluations: {evaluated}/{len(self.suite.runs)}{where}"

    def as_dict(self) -> dict:
        """For `--json`: every run's training state and step states."""
        runs = []
        for (method, slug, seed), run in self.suite.runs.items():
            t = self.trainings[(method, slug, seed)]
            runs.append({"method": method, "prompt_slug": slug, "seed": seed, "training": t.state, "step": t.step, "iterations": t.iterations,
                         "seconds_per_step": t.seconds_per_step, "eta_s": t.eta_s, "device": device_of(run), "steps": run.steps,
                         "failure": run.failure})
        return {"schema": "hifa.suite-status/1", "suite": self.suite.name, "runs": runs}


def suite_status(folder: str | Path, now: float | None = None) -> Status:
    """The status of every run of a suite folder (HifaError when it holds none)."""
    suite = collect(folder)
    return Status(suite, {key: training_of(run, now) for key, run in suite.runs.items()})


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain-text columns, left-aligned; a trailing extra cell (a failure) runs on unpadded."""
    widths = [max(len(r[i]) for r in [header, *rows] if i < len(r)) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) if i < len(header) - 1 else cell for i, cell in enumerate(row[: len(header)])]
        lines.append("  ".join(cells + row[len(header):]).rstrip())
    return "\n".join(lines)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def render_status(status: Status) -> str:
    """The table and the totals line, as `hifa status` prints them."""
    suite = status.suite
    header = ["method", "prompt"] + (["seed"] if suite.multi_seed else []) + ["train", *STEPS[1:]]
    seeds = f" × {len(suite.seeds)} seeds" if suite.multi_seed else ""
    title = f"{suite.name}: {plural(len(suite.methods), 'method')} × {plural(len(suite.slugs), 'prompt')}{seeds} ({plural(len(suite.runs), 'run')})"
    return "\n".join([title, "", format_table(header, status.rows()), "", status.totals()])


def print_status(folder: str | Path, as_json: bool = False, watch: int | None = None) -> int:
    """Print a suite's status (the table, or JSON); with `watch`, again every `watch` seconds until Ctrl-C,
    riding out a suite folder that has no runs yet."""
    def show() -> None:
        status = suite_status(folder)
        print(json.dumps(status.as_dict(), indent=2) if as_json else render_status(status), flush=True)

    if not watch:
        show()
        return 0
    try:
        while True:
            try:
                show()
            except HifaError as exc:  # e.g. no run folder yet: the suite may be about to start
                print(f"hifa: {exc}", file=sys.stderr, flush=True)
            time.sleep(watch)
            print()
    except KeyboardInterrupt:  # how a watch ends
        return 0
