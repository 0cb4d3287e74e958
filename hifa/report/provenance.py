"""The report's provenance table: which devices, libraries, code and checkpoints trained the suite's runs.

Read from each run's environment.json (hifa.provenance): a run resumed on another machine counts under each
setting it trained in; runs without a record (made before it existed) under 'not recorded'.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from hifa.provenance import checkpoint_name, commit_label
from hifa.report.collect import Run, Suite

MAX_NAMES = 8  # runs named per row before '… and N more'


@dataclass(frozen=True)
class Setting:
    """What decides a run's numbers beyond its config, as short texts."""

    device: str
    software: str
    code: str
    checkpoints: str


def _text(value: object) -> str:
    return str(value) if value not in (None, "") else "?"


def setting_of(session: dict) -> Setting:
    """The setting of one recorded session (missing fields read as '?')."""
    device = session.get("device") if isinstance(session.get("device"), dict) else {}
    name = _text(device.get("name"))
    if device.get("type") == "cuda":
        name += f" (CUDA {_text(device.get('cuda'))})"
    elif device.get("threads"):
        name += f" ({device['threads']} thread{'s' * (device['threads'] != 1)})"
    packages = session.get("packages") if isinstance(session.get("packages"), dict) else {}
    software = " · ".join(f"{k} {packages[k]}" for k in ("torch", "diffusers", "transformers") if packages.get(k))
    code = session.get("code") if isinstance(session.get("code"), dict) else {}
    label = f"hifa {_text(code.get('hifa'))}" + (f" @ {commit_label(code)}" if code.get("commit") else "")
    checkpoints = session.get("checkpoints") if isinstance(session.get("checkpoints"), dict) else {}
    models = "; ".join(f"{role} {checkpoint_name(entry)}" for role, entry in sorted(checkpoints.items()) if isinstance(entry, dict))
    return Setting(name, software or "?", label, models or "none (no pretrained model)")


def provenance_rows(suite: Suite) -> list[tuple[Setting | None, list[Run]]]:
    """Each setting with the runs that trained in it, most runs first; None: the runs with no record."""
    groups: dict[Setting | None, list[Run]] = {}
    for run in suite.runs.values():
        if run.steps.get("train") not in ("done", "partial", "stale") and not run.environment:
            continue  # never trained: nothing to attribute
        settings = list(dict.fromkeys(setting_of(s) for s in run.environment)) or [None]
        for setting in settings:
            groups.setdefault(setting, []).append(run)
    return sorted(groups.items(), key=lambda item: (item[0] is None, -len(item[1])))


def provenance_note(suite: Suite, rows: list[tuple[Setting | None, list[Run]]]) -> str:
    """What the table shows, and a caution when the suite's training times come from different devices."""
    note = "Where each run trained (environment.json in its folder): device, libraries, code and pretrained checkpoints."
    if any(len({setting_of(s) for s in run.environment}) > 1 for run in suite.runs.values()):
        note += " A run resumed in another setting is listed under each."
    devices = {setting.device for setting, _ in rows if setting is not None}  # a CPU's thread count is part of it
    if len(devices) > 1 and "wall_time_s" in suite.metric_keys:
        note += f" The runs trained on {len(devices)} devices (or thread counts): their wall times compare only within one."
    return note


def run_names(runs: list[Run]) -> str:
    """'hifa/a-ladybug, dreamfusion/a-ladybug.seed1, … and 3 more'."""
    names = [f"{run.method}/{run.name}" for run in runs]
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f", … and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


def provenance_csv(suite: Suite) -> str:
    """One row per training session of each run (method, prompt, seed, first step, then the setting), for a paper's
    reproducibility notes; a run without a record has one row saying so."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "prompt_slug", "seed", "from_step", "device", "libraries", "code", "checkpoints"])
    for (method, slug, seed), run in suite.runs.items():
        for session in run.environment:
            setting = setting_of(session)
            writer.writerow([method, slug, seed, session.get("from_step", ""), setting.device, setting.software, setting.code, setting.checkpoints])
        if not run.environment and run.steps.get("train") in ("done", "partial", "stale"):
            writer.writerow([method, slug, seed, "", "not recorded", "", "", ""])
    return buffer.getvalue()
