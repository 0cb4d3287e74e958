"""Files of the report: a staged output folder swapped in whole (no stale or half-written
files), thumbnails and copies of run media next to the page, and relative links."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from hifa.io import default_mode, write_bytes_atomic


@contextmanager
def staged_dir(final: Path):
    """Yield an empty sibling folder; on success it replaces `final` (old contents removed),
    on error it is deleted and `final` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, default_mode(directory=True))
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


class Assets:
    """Media for a page written under `stage` that will live at `final`: thumbnails and
    copies go to assets/, and `ref` gives page-relative links (to assets or to run files)."""

    def __init__(self, stage: Path, final: Path, thumb: int = 256):
        self.stage, self.final, self.thumb = Path(stage), Path(final), thumb
        self._done: dict[tuple[Path, int, int], str] = {}
        self.failures: list[str] = []

    def thumbnail(self, src: Path | None, name: str, max_w: int | None = None, max_h: int | None = None) -> str | None:
        """A downscaled PNG copy of `src` (fits max_w x max_h) as assets/<name>; its relative link."""
        if src is None:
            return None
        max_w, max_h = max_w or self.thumb, max_h or self.thumb
        key = (Path(src), max_w, max_h)
        if key in self._done:
            return self._done[key]
        try:
            with Image.open(src) as image:
                image.load()
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
                image.thumbnail((max_w, max_h), Image.Resampling.LANCZOS)
                data = png_bytes(image)
        except (OSError, ValueError) as exc:
            self.failures.append(f"cannot read image {src}: {exc.__class__.__name__}")
            return None
        rel = f"assets/{name}"
        write_bytes_atomic(self.stage / rel, data)
        self._done[key] = rel
        return rel

    def copy(self, src: Path | None, name: str) -> str | None:
        """A byte copy of `src` (GIF, MP4) as assets/<name>; its relative link."""
        if src is None:
            return None
        key = (Path(src), 0, 0)
        if key not in self._done:
            try:
                data = Path(src).read_bytes()
            except OSError as exc:
                self.failures.append(f"cannot read {src}: {exc.__class__.__name__}")
                return None
            write_bytes_atomic(self.stage / "assets" / name, data)
            self._done[key] = f"assets/{name}"
        return self._done[key]

    def write(self, rel: str, data: bytes) -> str:
        """Bytes made for the page (figures, CSV) at a relative path; the path."""
        write_bytes_atomic(self.stage / rel, data)
        return rel

    def link(self, target: Path | None) -> str | None:
        """A link from the final page folder to a file outside it (a mesh, a run folder)."""
        if target is None:
            return None
        return Path(os.path.relpath(Path(target).resolve(), self.final.resolve())).as_posix()
