"""Atomic file writes and image saving: a crash never leaves a half-written output."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, payload: object) -> Path:
    """JSON with sorted keys, written atomically."""
    return write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (H, W[, C]) to uint8 (a uint8 image is returned as it is)."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
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
