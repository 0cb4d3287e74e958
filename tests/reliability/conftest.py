"""Fixtures of the reliability suite shared across its modules (and across xdist workers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion folder (tests/tinyworld.py), built once for all workers. Read-only: copy it to damage it."""
    from filelock import FileLock

    from tests.tinyworld import build_tiny_stable_diffusion

    shared = tmp_path_factory.getbasetemp().parent  # common to the xdist workers of one run
    folder = shared / "reliability-tiny-sd"
    with FileLock(str(shared / "reliability-tiny-sd.lock")):
        if not (folder / "DONE").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            build_tiny_stable_diffusion(folder)
            (folder / "DONE").touch()
    return folder
