"""Pictures and videos of renders: colour maps, contact sheets and turntables, written atomically."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hifa.io import default_mode, to_uint8

log = logging.getLogger(__name__)
COLORMAP = "turbo"


def colorize(values: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor | None = None, background: float = 1.0) -> np.ndarray:
    """Values in [0, 1] (H, W) through the colour map to (H, W, 3) floats; `background` where mask <= 0.5."""
    from matplotlib import colormaps

    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    rgb = colormaps[COLORMAP](values)[..., :3]
    if mask is not None:
        rgb[np.asarray(mask) <= 0.5] = background
    return rgb.astype(np.float32)


def normalise(values: np.ndarray, mask: np.ndarray, value_range: tuple[float, float] | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Values mapped linearly so that `value_range` (default: min and max over the mask) becomes [0, 1]."""
    if value_range is None:
        picked = values[mask > 0.5]
        value_range = (float(picked.min()), float(picked.max())) if picked.size else (0.0, 1.0)
    lo, hi = value_range
    return (values - lo) / max(hi - lo, 1e-12), (lo, hi)


def planar_depth(depth: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """Depth of the visible surface, depth / O (the renderer's depth is sum w z, not divided by O); 0 where O is 0."""
    return np.where(opacity > 1e-6, depth / np.maximum(opacity, 1e-6), 0.0)


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W, 3) float image resized (area filter) so its height is `size`."""
    h, w = image.shape[:2]
    if h == size:
        return image
    resized = F.interpolate(image.permute(2, 0, 1)[None], size=(size, max(1, round(w * size / h))), mode="area")
    return resized[0].permute(1, 2, 0)


def contact_sheet(rows: list[torch.Tensor], columns: int = 8, thumb: int = 256, labels: list[str] | None = None) -> torch.Tensor:
    """Rows of per-view images (V, H, W, 3): up to `columns` evenly spaced views each, thumbnails of height <= thumb;
    with `labels`, each row's name in a margin on the left."""
    count = rows[0].shape[0]
    picks = np.unique(np.linspace(0, count - 1, min(columns, count)).round().astype(int))
    size = min(thumb, rows[0].shape[1])
    sheet = torch.cat([torch.cat([resize_image(row[i].float(), size) for i in picks], dim=1) for row in rows], dim=0)
    return label_rows(sheet, labels) if labels else sheet


def label_rows(image: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """(H, W, 3) image in [0, 1] of len(labels) equal rows, with a white margin on the left naming each row."""
    from PIL import Image, ImageDraw, ImageFont

    row_height = image.shape[0] // len(labels)
    font = ImageFont.load_default(size=int(np.clip(row_height // 6, 10, 18)))
    width = max(int(font.getbbox(text)[2]) for text in labels) + 12
    margin = Image.new("RGB", (width, image.shape[0]), (255, 255, 255))
    draw = ImageDraw.Draw(margin)
    for i, text in enumerate(labels):
        draw.text((6, i * row_height + row_height // 2), text, fill=(60, 60, 60), font=font, anchor="lm")
    strip = torch.from_numpy(np.asarray(margin, dtype=np.float32) / 255.0).to(image.dtype)
    return torch.cat([strip, image.cpu()], dim=1)


def _pad_even(frame: np.ndarray, fill: int = 255) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=fill)


def _atomic_target(path: Path) -> Path:
    """A temporary file beside `path`, named like hifa.io's atomic writes (.NAME.XXXX.tmp)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, default_mode())
    os.close(fd)
    return Path(tmp)


def mp4_boxes(path: Path) -> list[bytes]:
    """The types of an MP4's top-level boxes, or [] when they do not tile the file exactly (a cut-off write)."""
    size, types = path.stat().st_size, []
    with path.open("rb") as f:
        at = 0
        while at < size:
            f.seek(at)
            head = f.read(16)
            if len(head) < 8:
                return []
            length = int.from_bytes(head[:4], "big")
            if length == 1 and len(head) == 16:  # a 64-bit size follows the type
                length = int.from_bytes(head[8:16], "big")
            elif length == 0:  # the last box runs to the end of the file
                length = size - at
            if length < 8 or at + length > size:
                return []
            types.append(head[4:8])
            at += length
    return types


def write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """H.264 MP4 via imageio-ffmpeg's bundled ffmpeg, atomically."""
    import imageio_ffmpeg

    frames = [_pad_even(to_uint8(f)) for f in frames]
    h, w = frames[0].shape[:2]
    tmp = _atomic_target(path)
    try:
        # The temporary name has no .mp4 suffix for ffmpeg to guess the container from: name it.
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libx264", macro_block_size=1, quality=8, ffmpeg_log_level="error", output_params=["-f", "mp4"]
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        # imageio-ffmpeg neither checks ffmpeg's exit status nor reports a timeout kill: ffmpeg writes the index
        # (moov) last, so a finished file has it and its boxes tile it exactly.
        boxes = mp4_boxes(tmp)
        if b"moov" not in boxes or b"mdat" not in boxes:
            raise RuntimeError(f"ffmpeg did not finish the MP4 (top-level boxes: {[b.decode('latin-1') for b in boxes] or 'none'})")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_gif(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """Animated GIF via Pillow, atomically."""
    from PIL import Image

    images = [Image.fromarray(to_uint8(f)) for f in frames]
    tmp = _atomic_target(path)
    try:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_turntable(frames: list[np.ndarray], path: str | Path, fps: float = 25.0) -> Path:
    """An MP4 at `path`; if ffmpeg fails, a GIF next to it (same stem). Returns the file written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return write_mp4(frames, path, fps)
    except Exception as exc:  # no usable ffmpeg binary: keep the turntable as a GIF
        log.warning("turntable: ffmpeg failed (%s); writing a GIF instead", exc)
        return write_gif(frames, path.with_suffix(".gif"), fps)
