"""The C++ CPU kernels (hash-grid encoding, fused Adan step), compiled on first use and cached by torch."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

SOURCES = [Path(__file__).parent / "csrc" / name for name in ("bindings.cpp", "hashgrid_cpu.cpp", "adan_cpu.cpp")]
log = logging.getLogger(__name__)


@functools.cache
def cpu_kernels():
    """The compiled extension (built once per machine, cached by torch), or None if it cannot build."""
    try:
        # Quiet the CPU-only "No CUDA runtime is found" notice the loader logs on import.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils.cpp_extension import load

        return load("hifa_cpu_kernels", [str(s) for s in SOURCES], extra_cflags=["-O3", "-fno-math-errno"], verbose=False)
    except Exception as exc:  # no compiler, no ninja, or a build error: the PyTorch paths still work
        log.warning("C++ CPU kernels unavailable (%s); using the slower pure-PyTorch paths", str(exc).splitlines()[0])
        return None
