"""Engine acceptance run: `hifa reconstruct` on catalogue scenes, figures to benchmarks/results/.

Usage: python benchmarks/reconstruct.py [--scenes NAME ...] [--out benchmarks/results]
Writes reconstruct-<device>.json (machine, versions, per-scene metrics) and a Markdown table; a run of some
scenes replaces their rows as each is measured and keeps the others' (each row names its date and commit).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from hifa.io import write_bytes_atomic, write_json_atomic
from hifa.reconstruct import ReconstructConfig, reconstruct, summary_line
from hifa.scenes import get_scene, scene_names

TARGETS = {"psnr": 26.0, "chamfer_fraction_of_extent": 0.02}


def machine() -> dict:
    """Where and on what the figures were taken; `tree_modified` says the tree differs from `commit`."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "tree_modified": bool(status.strip()),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| scene | PSNR (dB) | textured mesh PSNR (dB) | Chamfer (% extent) | F-score @1% | depth MAE | steps | wall time (s) | pass |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        ok = m["psnr"] >= TARGETS["psnr"] and m["chamfer_fraction_of_extent"] <= TARGETS["chamfer_fraction_of_extent"]
        lines.append(
            f"| {m['scene']} | {m['psnr']:.2f} | {m['mesh_psnr']:.2f} | {100 * m['chamfer_fraction_of_extent']:.2f} | {m['fscore']:.3f} | "
            f"{m['depth_mae']:.4f} | {m['steps']} | {m['wall_time_s']:.0f} | {'yes' if ok else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def earlier_rows(path: Path) -> list[dict]:
    """The rows of an earlier run's JSON (each is replaced when its scene is measured again)."""
    return json.loads(path.read_text()).get("scenes", []) if path.is_file() else []


def merged(rows: list[dict], row: dict) -> list[dict]:
    """`rows` with `row` added (replacing the same scene's), in the catalogue's order."""
    order = {name: i for i, name in enumerate(scene_names())}
    rows = [r for r in rows if r.get("scene") != row["scene"]] + [row]
    return sorted(rows, key=lambda r: order.get(r.get("scene"), len(order)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=scene_names())
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--runs", default="results/reconstruct", help="where each scene's outputs go")
    args = parser.parse_args()
    config = ReconstructConfig()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    rows = earlier_rows(out / f"reconstruct-{device}.json")
    for name in args.scenes:
        metrics = reconstruct(get_scene(name), config, Path(args.runs) / name, progress=False)
        print(summary_line(metrics), flush=True)
        when = machine()
        row = {k: v for k, v in metrics.items() if k not in ("config", "psnr_per_view")}
        rows = merged(rows, {**row, "measured": {"date": when["date"], "commit": when["commit"]}})
        # Written after every scene, so an interrupted benchmark keeps what it measured.
        payload = {"benchmark": "reconstruct", "targets": TARGETS, "machine": when, "config": metrics["config"], "scenes": rows}
        write_json_atomic(out / f"reconstruct-{device}.json", payload)
        header = f"# hifa reconstruct on {device} ({payload['machine']['cpu_count']} cores, {payload['machine']['date']})\n\n"
        write_bytes_atomic(out / f"reconstruct-{device}.md", (header + table(rows)).encode())
    print(table(rows))


if __name__ == "__main__":
    main()
