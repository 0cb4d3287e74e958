"""Record operators that make the host wait for the device: value reads and data-dependent output sizes."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# On CUDA each of these waits for every queued kernel before the host can go on.
WAITING_OPS = {"aten.nonzero.default", "aten._local_scalar_dense.default", "aten.masked_select.default",
               "aten.is_nonzero.default", "aten.equal.default", "aten.nonzero_numpy.default"}


class HostReads(TorchDispatchMode):
    """Names of the waiting operators dispatched inside the block (boolean-mask indexing included)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name in WAITING_OPS:
            self.ops.append(name)
        elif name in ("aten.index.Tensor", "aten.index_put_.default", "aten.index_put.default"):
            if any(i is not None and i.dtype == torch.bool for i in args[1]):
                self.ops.append(name + "[bool]")
        return func(*args, **(kwargs or {}))
