"""Atomic writes keep the modes a plain open() or mkdir() would give under the umask."""

import os
import stat

import numpy as np
import pytest

from hifa.io import default_mode, process_umask, save_image, write_bytes_atomic
from hifa.media import write_turntable
from hifa.report.assets import staged_dir


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        assert process_umask() == umask
        assert default_mode() == 0o666 & ~umask and default_mode(directory=True) == 0o777 & ~umask
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what the OS gives without hifa.io
        written = write_bytes_atomic(tmp_path / "checkpoint.pt", b"x")
        image = tmp_path / "view.png"
        save_image(np.zeros((4, 4, 3), dtype=np.float32), image)
        video = write_turntable([np.zeros((8, 8, 3), dtype=np.float32)] * 2, tmp_path / "turntable.mp4", fps=2)
        with staged_dir(tmp_path / "report") as folder:
            (folder / "index.html").write_text("x")
        for path in (written, image, video):
            assert mode(path) == mode(plain) == 0o666 & ~umask, path
        assert mode(tmp_path / "report") == 0o777 & ~umask
    finally:
        os.umask(previous)
