"""Atomic file writes and image saving: a crash never leaves a half-written output."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from hifa.errors import HifaError, OutputError

if TYPE_CHECKING:
    import torch

TMP_SUFFIX = ".tmp"


def process_umask() -> int:
    """The process's umask (Linux reads it without changing it; elsewhere it is set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode open() or mkdir() would give; mkstemp and mkdtemp make 0600/0700 files nobody else can read."""
    return (0o777 if directory else 0o666) & ~process_umask()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A crash or kill at any point leaves either the previous file or the new one, never a mix; a failed
    write (full disk, no permission) removes its temporary file and raises OutputError (one line, still
    an OSError with the original errno), leaving the previous file as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        os.fchmod(fd, default_mode())  # results on a shared file system stay readable by the group, as the umask says
    except OSError as exc:
        raise write_error(path, exc, len(data)) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise write_error(path, exc, len(data)) from exc
        raise
    _fsync_dir(path.parent)
    return path


def write_error(path: Path, exc: OSError, size: int) -> OutputError:
    """A one-line OutputError for a failed write of `size` bytes to `path`."""
    reason = exc.strerror or exc.__class__.__name__
    hint = " (free some space and run the command again)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    kept = "the previous file is intact" if path.exists() else "nothing was written"
    return OutputError(f"cannot write {path} ({size / 1e6:.1f} MB): {reason}; {kept}{hint}", exc.errno)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some file systems cannot fsync a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_folder_path(path: str | Path, option: str = "--out") -> Path:
    """`path` as a folder to write into, or a one-line error when it or a parent is an existing file."""
    path = Path(path)
    for place in (path, *path.parents):
        if place.exists() and not place.is_dir():
            raise HifaError(f"{option} {path} is a file, not a folder" if place == path else f"{option} {path}: {place} is a file, not a folder")
        if place.is_dir():
            break
    return path


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """`check_folder_path`, then the folder made (with its parents)."""
    path = check_folder_path(path, option)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_stale_temporaries(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Delete the temporary files of atomic writes a killed process left in `folder` (`.NAME.XXXX.tmp`).

    Only for a folder one process owns (a run folder): a live writer's temporary file would go too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(f".*{TMP_SUFFIX}") if recursive else folder.glob(f".*{TMP_SUFFIX}")
    removed = []
    for tmp in found:
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def finite(value):
    """JSON-safe copy: non-finite floats become None (JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: str | Path, payload: object) -> Path:
    """JSON with sorted keys, written atomically."""
    return write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (H, W[, C]) to uint8 (a uint8 image is returned as it is)."""
    # A torch tensor, without importing torch here (hifa.tracking, and so MLflow-only jobs, import this module).
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.dtype == np.uint8:
        return array
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(image: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Save a float image in [0, 1] as PNG, atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format=path.suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG")
    return write_bytes_atomic(path, buffer.getvalue())


def write_npz_atomic(path: str | Path, **arrays: np.ndarray) -> Path:
    """Arrays in one compressed .npz, written atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
    return write_bytes_atomic(path, buffer.getvalue())


def load_image(path: str | Path) -> np.ndarray:
    """A PNG as float32 RGB in [0, 1], (H, W, 3)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
