"""`hifa reproduce RUN`: train a finished run again from its saved config and say whether the result is the same.

The check a reproducibility pipeline owes its users: on the same machine and code a run reproduces bit for bit
(the seed fixes every random draw); elsewhere the weights differ by rounding, and the comparison says by how
much, in which tensor, what that did to the held-out scores, and what differs between the two settings (device,
libraries, code, checkpoints; hifa.provenance).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import torch

from hifa.configio import to_dict, trained_changes
from hifa.errors import HifaError
from hifa.io import write_json_atomic
from hifa.provenance import differences, read_sessions
from hifa.run_folder import WEIGHTS_FILE, load_config, load_state, run_dir

SCHEMA = "hifa.reproduce/1"
COMPARED = ("heldout_psnr", "heldout_depth_mae", "final_loss", "steps")  # train_summary.json values set side by side


def weight_difference(original: Path, reproduction: Path) -> tuple[float, str | None]:
    """The largest absolute difference between two runs' evaluation weights, and the tensor it is in (None: equal).

    inf when the two hold different tensors or shapes (another field, not a rounding difference)."""
    a, b = (load_state(folder / WEIGHTS_FILE)["renderer"] for folder in (original, reproduction))
    if a.keys() != b.keys():
        return math.inf, ", ".join(sorted(a.keys() ^ b.keys()))
    worst, where = 0.0, None
    for name in sorted(a):
        if a[name].shape != b[name].shape:
            return math.inf, name
        if not torch.equal(a[name], b[name]):
            diff = float((a[name].double() - b[name].double()).abs().max())
            if diff > worst or where is None:
                worst, where = diff, name
    return worst, where


def finished(run: str | Path) -> Path:
    """A run folder whose training finished (it has weights.pt), or a one-line error."""
    run = run_dir(run)
    if not (run / WEIGHTS_FILE).is_file():
        raise HifaError(f"{run} holds no finished training ({WEIGHTS_FILE} is written at its end); finish it with `hifa train --resume` first")
    return run


def summary_of(run: Path) -> dict:
    """train_summary.json, or {} when unreadable (its scores are then missing from the comparison)."""
    try:
        return json.loads((run / "train_summary.json").read_text())
    except (OSError, ValueError):
        return {}


def compare(original: str | Path, reproduction: str | Path) -> dict:
    """Two finished runs side by side: weights, held-out scores and settings (what reproduce.json holds)."""
    original, reproduction = finished(original), finished(reproduction)
    worst, where = weight_difference(original, reproduction)
    a, b = summary_of(original), summary_of(reproduction)
    before, after = read_sessions(original), read_sessions(reproduction)
    config_changes = trained_changes(to_dict(load_config(original)), to_dict(load_config(reproduction)))
    return {
        "schema": SCHEMA, "original": str(original), "reproduction": str(reproduction), "identical": worst == 0.0 and where is None,
        "max_abs_weight_difference": worst, "largest_in": where, "config_changes": config_changes,
        "scores": {key: {"original": a.get(key), "reproduction": b.get(key)} for key in COMPARED if key in a or key in b},
        "setting_changes": differences(before[-1], after[-1]) if before and after else None,
    }


def reproduce(run: str | Path, out: str | Path, device: str | None = None, progress: bool = True) -> dict:
    """Train `run`'s config again into `out` (no MLflow run) and compare the two; writes out/reproduce.json and returns it."""
    from hifa.training import run_training

    run, out = finished(run), Path(out)
    if out.resolve() == run.resolve():
        raise HifaError("reproduce into another folder than the run itself (--out)")
    config = load_config(run)
    run_training(replace(config, tracking=replace(config.tracking, enabled=False), **({"device": device} if device else {})), out, progress=progress)
    result = compare(run, out)
    write_json_atomic(out / "reproduce.json", result)
    return result


def summary_line(result: dict) -> str:
    """'reproduced bit for bit: ...', 'reproduced within 3.1e-06 (largest difference in ...); ...; settings changed: ...', or
    'not a reproduction: the configs differ in ...'."""
    scores = result["scores"]
    psnr = scores.get("heldout_psnr") or {}
    parts = []
    if psnr.get("original") is not None and psnr.get("reproduction") is not None:
        a, b = psnr["original"], psnr["reproduction"]
        parts.append(f"held-out PSNR {a:.2f} dB in both" if a == b else f"held-out PSNR {a:.2f} -> {b:.2f} dB")
    changes = result["setting_changes"]
    parts.append("the same setting" if changes == [] else "settings changed: " + "; ".join(changes) if changes else "settings not recorded")
    if result.get("config_changes"):
        changed = ", ".join(result["config_changes"][:5]) + (", ..." if len(result["config_changes"]) > 5 else "")
        head = f"not a reproduction: the configs differ in {changed} (largest weight difference {result['max_abs_weight_difference']:.2g})"
    elif result["identical"]:
        head = "reproduced bit for bit: every weight identical"
    elif math.isinf(result["max_abs_weight_difference"]):
        head = f"not the same field: the weights differ in layout ({result['largest_in']})"
    else:
        head = f"reproduced within {result['max_abs_weight_difference']:.2g} (largest difference in {result['largest_in']})"
    return f"{head}; {', '.join(parts)}"


def reproduced(result: dict, tolerance: float = 0.0) -> bool:
    """The same config, and no weight further apart than `tolerance`."""
    return not result.get("config_changes") and result["max_abs_weight_difference"] <= tolerance
