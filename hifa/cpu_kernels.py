"""The C++ CPU kernels (hash-grid encoding, fused Adan step), compiled on first use and cached by torch."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

import torch

from hifa.io import write_bytes_atomic

SOURCES = [Path(__file__).parent / "csrc" / name for name in ("bindings.cpp", "hashgrid_cpu.cpp", "adan_cpu.cpp")]
NAME = "hifa_cpu_kernels"
FLAGS = ["-O3", "-fno-math-errno"]
log = logging.getLogger(__name__)


def build_directory(name: str) -> Path | None:
    """torch's cache folder for extension `name`, or None if torch's (private) helper has moved."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    except Exception:
        return None


def import_built(name: str):
    """The cached build of `name` imported directly, or None (not built yet, or half-written by a build now running)."""
    import importlib.util

    folder = build_directory(name)
    library = folder / f"{name}.so" if folder else None
    if library is None or not library.exists():
        return None
    try:
        spec = importlib.util.spec_from_file_location(name, library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception:  # e.g. a concurrent first build is still linking it: load() waits for that build
        return None


def staged_sources() -> tuple[str, list[Path]]:
    """The sources copied to a folder named by their content, and the extension name for that content.

    torch's build (ninja) reruns whenever the source paths change, so two checkouts of the same code
    (a cluster's clones, the tests' pipeline copies) would rebuild each other's cache in turn, about a
    minute each time; staged by content they share one build, and different code gets its own.
    """
    # The torch version too: torch's cache folder is per Python and CUDA version only.
    digest = hashlib.sha256(" ".join([torch.__version__, *FLAGS]).encode())
    for source in SOURCES:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    tag = digest.hexdigest()[:16]
    root = Path(os.environ.get("HIFA_CACHE_DIR") or Path.home() / ".cache" / "hifa") / "csrc" / tag
    staged = []
    for source in SOURCES:
        target = root / source.name
        if not target.exists() or target.read_bytes() != source.read_bytes():
            write_bytes_atomic(target, source.read_bytes())
        staged.append(target)
    return f"{NAME}_{tag}", staged


@functools.cache
def cpu_kernels():
    """The compiled extension (built once per machine and code version, cached by torch), or None if it cannot build."""
    try:
        # Quiet the CPU-only "No CUDA runtime is found" notice the loader logs on import.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils.cpp_extension import load

        name, sources = staged_sources()
        # The name pins sources, flags and torch version, so a build of it is the right one: import it
        # directly. load() would ask ninja, which rebuilds whenever the command line differs (another
        # venv's include paths), and processes from two venvs then rebuild each other's cache in turn.
        module = import_built(name)
        if module is not None:
            return module
        log.warning("compiling the C++ CPU kernels (first use on this machine, about a minute; cached afterwards)")
        return load(name, [str(s) for s in sources], extra_cflags=FLAGS, verbose=False)
    except Exception as exc:  # no compiler, no ninja, or a build error: the PyTorch paths still work
        log.warning("C++ CPU kernels unavailable (%s); using the slower pure-PyTorch paths", str(exc).splitlines()[0])
        return None
