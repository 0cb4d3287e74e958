"""`hifa doctor`: whether this machine can run the pipeline, checked before a suite's jobs are queued on it.

On a cluster the jobs run on compute nodes that often have no internet, no compiler or another GPU than the
login node: run `hifa doctor` there (e.g. through `srun`). It reports the device, the fast kernels, each
pretrained model (cached, downloadable, or missing, with how to get it), the CLIP checkpoints, the space
for results and torch.compile's cache, without downloading or compiling anything. Exit status 1 when a check fails.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from hifa.hub import (MODEL, PIPELINE, hub_endpoint, in_cache, is_local_path, missing_model_message, model_folder_problem,
                      offline, reachable, resolve_model, unreachable_message)
from hifa.errors import HifaError
from hifa.io import check_folder_path
from hifa.provenance import checkpoint, code_version, commit_label, device_info, package_version

OK, WARN, FAIL = "ok", "warning", "failed"
MARKS = {OK: "✓", WARN: "!", FAIL: "✗"}
MIN_FREE_GIB = 20.0  # a paper suite's run folders: weights, renders, meshes and textures (~0.2 GB a run) and headroom


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, its outcome and the details (or what to do)."""

    name: str
    status: str
    detail: str


def check_device() -> Check:
    """A CUDA GPU, or the CPU (fine for the oracle and tiny worlds; real models want a GPU)."""
    import torch

    if torch.cuda.is_available():
        info = device_info(torch.device("cuda"))
        return Check("device", OK, f"{info['name']}, {info['memory_gib']} GiB, CUDA {info['cuda']}, torch {torch.__version__}")
    info = device_info(torch.device("cpu"))
    return Check("device", WARN, f"no CUDA GPU ({info['name']}, torch {torch.__version__}): the oracle and tiny worlds run here, "
                 "Stable Diffusion runs want a GPU")


def check_kernels() -> Check:
    """The hash grid's fast paths: Triton (CUDA) or tiny-cuda-nn; on a CPU, the C++ kernels (built on first use)."""
    import torch

    if torch.cuda.is_available():
        from hifa.triton_support import triton_available

        tcnn = package_version("tinycudann")
        if triton_available():
            return Check("kernels", OK, f"fused Triton hash grid (triton {package_version('triton')})"
                         + (f"; tiny-cuda-nn {tcnn} installed" if tcnn else "; tiny-cuda-nn not installed (optional)"))
        if tcnn:
            return Check("kernels", OK, f"tiny-cuda-nn {tcnn} (no Triton)")
        return Check("kernels", WARN, "neither Triton nor tiny-cuda-nn: the pure-PyTorch hash grid is about 2.4x slower per step")
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its CPU-only "No CUDA runtime" notice
    from hifa.cpu_kernels import import_built, staged_sources

    if import_built(staged_sources()[0]) is not None:
        return Check("kernels", OK, "C++ CPU kernels built")
    if shutil.which(os.environ.get("CXX", "c++")):
        return Check("kernels", OK, "C++ CPU kernels not built yet: compiled on first use (about a minute, cached)")
    return Check("kernels", WARN, "no C++ compiler: the pure-PyTorch paths run instead (slower; install g++)")


def check_model(role: str, model: str, what: str, kind: str) -> Check:
    """A pretrained model: a local `kind` folder (PIPELINE or MODEL), cached, downloadable from the hub, or missing
    (with how to get it)."""
    if is_local_path(model):
        problem = model_folder_problem(model, what, kind)
        if problem is not None:
            return Check(role, FAIL, problem)
        return Check(role, OK, f"{model}: local folder, fingerprint {checkpoint(model)['fingerprint']}")
    resolved = resolve_model(model)
    if in_cache(resolved):
        revision = checkpoint(resolved)["revision"]
        return Check(role, OK, f"{resolved}: cached" + (f", revision {revision[:7]}" if revision else ""))
    if offline():
        return Check(role, FAIL, missing_model_message(resolved, what))
    endpoint = hub_endpoint()
    if reachable(endpoint):
        return Check(role, WARN, f"{resolved}: not cached; downloaded from {urllib.parse.urlsplit(endpoint).hostname} on first use")
    return Check(role, FAIL, unreachable_message(resolved, what, endpoint))


def check_clip(names: tuple[str, ...]) -> Check:
    """The CLIP checkpoints of `hifa evaluate`: present in the CLIP folder, downloadable, or missing."""
    from hifa.evaluate.clip import check_available, checkpoint_file, clip_root

    root, present, later = clip_root(), [], []
    for name in names:
        try:
            check_available(name, root)
        except HifaError as exc:
            return Check("clip", FAIL, str(exc))
        file = checkpoint_file(name)
        (present if file is None or (root / file).is_file() else later).append(name)
    if later:
        return Check("clip", WARN, f"{', '.join(later)} downloaded into {root} on first use" + (f"; {', '.join(present)} there" if present else ""))
    return Check("clip", OK, f"{', '.join(names)} in {root}" if names else "no CLIP models asked for")


def check_storage(results: Path) -> Check:
    """The results folder can be written and has room (the nearest existing parent is checked)."""
    folder = results.expanduser().resolve()
    try:
        check_folder_path(folder, "--results")
    except HifaError as exc:
        return Check("results", FAIL, str(exc))
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 2**30
    if not os.access(existing, os.W_OK):
        return Check("results", FAIL, f"{existing} is not writable (results go to {folder})")
    status = OK if free >= MIN_FREE_GIB else WARN
    return Check("results", status, f"{folder}: writable, {free:.0f} GiB free" + ("" if status == OK else f" (under {MIN_FREE_GIB:.0f} GiB)"))


def check_compile_cache() -> Check:
    """Where torch.compile keeps its kernels ($TORCHINDUCTOR_CACHE_DIR, else torch's folder in the temp dir), and how much is there."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    folder = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir()).resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        return Check("compile cache", FAIL, f"{existing} is not writable (torch.compile caches in {folder}; set TORCHINDUCTOR_CACHE_DIR)")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20 if folder.is_dir() else 0.0
    temporary = folder.is_relative_to(Path(tempfile.gettempdir()).resolve())
    where = " (in the temp dir, on a cluster each node's own; the workflow's jobs use <results>/.compile-cache)" if temporary else ""
    return Check("compile cache", OK, f"{folder}: {size:.0f} MiB cached{where}")


def run_checks(prior_model: str | None, depth_model: str | None, clip_models: tuple[str, ...], results: Path) -> list[Check]:
    """Every check, in the order they are printed; a model left None is the presets' default."""
    from hifa.depth import DEFAULT_DEPTH_MODEL
    from hifa.guidance.stable_diffusion import DEFAULT_MODEL

    return [check_device(), check_kernels(),
            check_model("prior", prior_model or DEFAULT_MODEL, "Stable Diffusion model", PIPELINE),
            check_model("depth", depth_model or DEFAULT_DEPTH_MODEL, "depth model", MODEL), check_clip(clip_models),
            check_storage(results), check_compile_cache()]


def report(checks: list[Check], as_json: bool = False) -> str:
    """The checks as aligned lines under a heading (or JSON), and a closing line."""
    code = code_version()
    if as_json:
        return json.dumps({"code": code, "offline": offline(), "checks": [asdict(c) for c in checks]}, indent=2)
    version = f"hifa-pipeline {code['hifa']}" + (f" @ {commit_label(code)}" if code["commit"] else "")
    lines = [f"hifa doctor: {version}" + (" (offline: HF_HUB_OFFLINE or HIFA_OFFLINE set)" if offline() else "")]
    width = max(len(c.name) for c in checks)
    lines += [f" {MARKS[c.status]} {c.name.ljust(width)}  {c.detail}" for c in checks]
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    if failed:
        lines.append(f"{failed} check{'s' * (failed != 1)} failed (✗): runs that need them fail on this machine "
                     "(the oracle world, `make demo`, needs no pretrained model)")
    else:
        lines.append("ready" + (f", with {warned} warning{'s' * (warned != 1)} (!)" if warned else ""))
    return "\n".join(lines)
