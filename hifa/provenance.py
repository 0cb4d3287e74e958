"""What a run was made with: the code's version and commit, the libraries, the device and the exact checkpoints.

A training writes `environment.json` into its run folder: one entry per session that trained steps (a resumed
run on another machine has two), so a table of numbers can say which GPU, which torch and which weights made
them. Nothing here needs the network, and nothing here fails a training: what cannot be found is recorded as null.
torch is imported where a record is made, not to read one (the report and `hifa status` run without it).
The file's format: hifa/environment.schema.json.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import hifa
from hifa.hub import cached_file, is_local_path
from hifa.io import write_json_atomic

if TYPE_CHECKING:
    import torch

ENVIRONMENT_FILE = "environment.json"
SCHEMA = "hifa.environment/1"
PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "numpy", "triton", "tinycudann")
SMALL_FILE = 4 << 20  # files up to this size are hashed whole (configs, tokenizers, tiny models)
SAMPLE = 1 << 20  # of a larger file (weights): its size, first and last MiB
SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})/")


def package_version(name: str) -> str | None:
    """The installed distribution's version, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def code_version() -> dict:
    """hifa's version, and the git commit of the checkout it runs from (None when installed from a wheel), with
    whether tracked files differ from that commit; asked once per process (a process runs one code version)."""
    root = Path(hifa.__file__).resolve().parent.parent
    commit, modified = None, None
    if (root / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
            status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            if head.returncode == 0:
                commit = head.stdout.strip()
                modified = bool(status.stdout.strip()) if status.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):  # no git on this machine
            pass
    return {"hifa": hifa.__version__, "commit": commit, "modified": modified}


def cpu_name() -> str:
    """The processor's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict:
    """The device's name and what decides its numbers: memory, CUDA and cuDNN versions; threads on a CPU."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"type": "cuda", "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    return {"type": device.type, "name": cpu_name(), "threads": torch.get_num_threads()}


def fingerprint(folder: Path) -> str:
    """A digest of a checkpoint folder: every file's path and size, small files whole, large ones' first and last MiB.

    Reading 5 GB of weights at each training start would cost seconds to minutes; the sampled bytes change with
    any retraining or conversion of a weight file, the sizes with any change of shape or dtype."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        with path.open("rb") as f:
            if size <= SMALL_FILE:
                digest.update(f.read())
            else:
                digest.update(f.read(SAMPLE))
                f.seek(size - SAMPLE)
                digest.update(f.read(SAMPLE))
    return digest.hexdigest()[:16]


def checkpoint(model: str) -> dict:
    """Where a pretrained model came from: a local folder (its path and fingerprint) or a hub id (the cached
    snapshot's revision, the commit of the files that were loaded)."""
    if is_local_path(model):
        folder = Path(model).expanduser().resolve()
        try:
            digest = fingerprint(folder) if folder.is_dir() else None
        except OSError:  # an unreadable file: the record says so rather than stopping the training
            digest = None
        return {"model": model, "path": str(folder), "fingerprint": digest}
    found = cached_file(model)
    match = SNAPSHOT.search(found.as_posix()) if found is not None else None
    return {"model": model, "revision": match.group(1) if match else None}


def environment(device: torch.device, checkpoints: dict[str, str] | None = None) -> dict:
    """One session's record: code, Python, platform, package versions, the device, and each named checkpoint."""
    import torch

    return {
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code": code_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: torch.__version__ if name == "torch" else package_version(name) for name in PACKAGES},  # torch's with its build tag
        "device": device_info(device),
        "checkpoints": {role: checkpoint(model) for role, model in (checkpoints or {}).items()},
    }


def read_sessions(run_dir: Path) -> list[dict]:
    """The sessions recorded in a run folder's environment.json; [] if it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(run_dir) / ENVIRONMENT_FILE).read_text())
    except (OSError, ValueError):
        return []
    sessions = data.get("sessions") if isinstance(data, dict) else None
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []


def record_session(run_dir: Path, from_step: int, env: dict) -> list[str]:
    """Add a session that trains from `from_step`: a fresh training (step 0) starts the list over, and sessions
    recorded from a later step than this one are dropped (their steps were lost with their unsaved checkpoint).
    Returns what differs from the session it continues (see `differences`)."""
    kept = [s for s in read_sessions(run_dir) if isinstance(s.get("from_step"), int) and s["from_step"] <= from_step] if from_step else []
    write_json_atomic(Path(run_dir) / ENVIRONMENT_FILE, {"schema": SCHEMA, "sessions": [*kept, {"from_step": from_step, **env}]})
    return differences(kept[-1], env) if kept else []


def commit_label(code: dict) -> str:
    """'bd36857', 'bd36857 (modified)' (tracked files differed from the commit), or 'unknown' (no git checkout)."""
    return (str(code["commit"])[:7] if code.get("commit") else "unknown") + (" (modified)" if code.get("modified") else "")


def differences(before: dict, after: dict) -> list[str]:
    """What changed between two sessions of a run: 'code 55ee234 -> bd36857', 'device A -> B', 'torch 2.11.0 -> 2.14.1', ..."""
    changes = []
    old, new = before.get("code") or {}, after.get("code") or {}
    if (old.get("commit"), old.get("modified")) != (new.get("commit"), new.get("modified")):
        changes.append(f"code {commit_label(old)} -> {commit_label(new)}")
    old_device, new_device = before.get("device") or {}, after.get("device") or {}
    if old_device.get("name") != new_device.get("name"):
        changes.append(f"device {old_device.get('name')} -> {new_device.get('name')}")
    elif old_device.get("threads") != new_device.get("threads"):  # on one CPU the thread count orders its reductions
        changes.append(f"threads {old_device.get('threads')} -> {new_device.get('threads')}")
    for name in PACKAGES:
        was, now = (before.get("packages") or {}).get(name), (after.get("packages") or {}).get(name)
        if was != now:
            changes.append(f"{name} {was} -> {now}")
    for role in sorted(set(before.get("checkpoints") or {}) | set(after.get("checkpoints") or {})):
        was, now = (before.get("checkpoints") or {}).get(role), (after.get("checkpoints") or {}).get(role)
        if was != now:
            changes.append(f"{role} checkpoint {checkpoint_name(was)} -> {checkpoint_name(now)}")
    return changes


def checkpoint_name(entry: dict | None) -> str:
    """A hub model as 'id @ revision' (7 digits), a local folder as 'folder-name #fingerprint' (8), or 'none'."""
    if not entry:
        return "none"
    if entry.get("path"):
        fingerprint = entry.get("fingerprint")
        return f"{PurePath(str(entry['path'])).name} #{str(fingerprint)[:8] if fingerprint else 'unreadable'}"
    return f"{entry.get('model')} @ {str(entry['revision'])[:7] if entry.get('revision') else 'revision unknown'}"
