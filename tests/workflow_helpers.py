"""Helpers for the workflow tests: a throw-away copy of the pipeline files, and Snakemake/DVC runners."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What the pipeline needs in a checkout; hifa/ itself runs from the installed (editable) package,
# the copy is there for DVC's dependency hashing.
PIPELINE_FILES = ("Snakefile", "workflow", "config", "profiles", "dvc.yaml", ".dvcignore", ".gitignore", "hifa")


def tool_env(**extra: str) -> dict[str, str]:
    """The venv's tools first on PATH, offline, no telemetry, one thread per process."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        DVC_NO_ANALYTICS="1",
        OMP_NUM_THREADS="1",
    )
    env.pop("HIFA_MLFLOW_DB", None)
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    env.update(extra)
    return env


def copy_pipeline(dest: Path) -> Path:
    """A fresh git + DVC checkout of the pipeline files under `dest` (the default DVC remote lands
    next to it, in dest/../hifa-dvc-remote, as it would next to a real clone)."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", ".snakemake")
    for name in PIPELINE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / ".dvc").mkdir(exist_ok=True)
    shutil.copy2(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    (dest / "tests").mkdir(exist_ok=True)
    for name in ("__init__.py", "tinyworld.py"):
        shutil.copy2(ROOT / "tests" / name, dest / "tests" / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run(args: list[str], cwd: Path, timeout: float = 900, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command (nice'd) and return it; on failure raise with its output."""
    proc = subprocess.run(
        ["nice", "-n", "5", *args], cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def snakemake(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return run([str(BIN / "snakemake"), *args], cwd, **kwargs)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry run, as {rule: count} (without 'total')."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return counts
    for line in lines[start + 3 :]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def dry_run_jobs(output: str) -> list[dict[str, str]]:
    """Each job block of `snakemake -n` output as {'rule', 'wildcards', 'resources', 'threads', 'shell'}."""
    jobs: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in output.splitlines():
        match = re.match(r"^(?:local)?rule (\S+):$", line.strip())
        if match:
            current = {"rule": match.group(1)}
            jobs.append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        for key in ("wildcards", "resources", "threads"):
            if stripped.startswith(f"{key}: "):
                current[key] = stripped[len(key) + 2 :]
    return jobs


def parse_pairs(text: str) -> dict[str, str]:
    """'a=1, b=x' -> {'a': '1', 'b': 'x'}."""
    return dict(part.split("=", 1) for part in (p.strip() for p in text.split(", ")) if "=" in part)
