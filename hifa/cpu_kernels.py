"""The C++ CPU kernels (hash-grid encoding, fused Adan step), compiled on first use and cached by torch."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

SOURCES = [Path(__file__).parent / "csrc" / name for name in ("bindings.cpp", "hashgrid_cpu.cpp", "adan_cpu.cpp")]
NAME = "hifa_cpu_kernels"
FLAGS = ["-O3", "-fno-math-errno"]
log = logging.getLogger(__name__)


def built(name: str) -> bool:
    """Whether torch's extension cache holds a build of `name` (it still rebuilds when the sources changed)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").exists()
    except Exception:  # a private helper of torch's: if it moves, just skip the notice
        return True


@functools.cache
def cpu_kernels():
    """The compiled extension (built once per machine, cached by torch), or None if it cannot build."""
    try:
        # Quiet the CPU-only "No CUDA runtime is found" notice the loader logs on import.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils.cpp_extension import load

        if not built(NAME):  # a silent minute-long pause otherwise
            log.warning("compiling the C++ CPU kernels (first use on this machine, about a minute; cached afterwards)")
        return load(NAME, [str(s) for s in SOURCES], extra_cflags=FLAGS, verbose=False)
    except Exception as exc:  # no compiler, no ninja, or a build error: the PyTorch paths still work
        log.warning("C++ CPU kernels unavailable (%s); using the slower pure-PyTorch paths", str(exc).splitlines()[0])
        return None
