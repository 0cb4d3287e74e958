"""Fixed-size compaction of a training render's samples, so that the host never waits to learn how many are kept.

`nonzero` must copy its count to the host before it can size its output: on CUDA the host then waits for every
queued kernel, twice per training render with the occupancy grid (coarse and fine samples) and once more for the
normals of the orientation loss. With a budget the kept samples' indices
come from `nonzero_static` into a batch of fixed size C, padded with dummy samples whose results are dropped.
C comes from the counts of earlier steps, read with their logged values (overlap_steps): the largest of the
last WINDOW, times MARGIN, rounded up. A step whose count exceeds its C would lose samples: it is gated out
like a non-finite step, and the budget starts over from exactly compacted steps.
"""

from __future__ import annotations

import math
from collections import deque

import torch

# In oracle runs the grid's counts moved by up to ~10 % between steps and 3-7 % at a grid update; the normals'
# ('dreamfusion') between 1100 and 1800 within 16 steps, which the maximum over the window covers.
MARGIN = 1.2
WINDOW = 16  # the grid's default update interval
GRAIN = 1024  # capacities are multiples of this: few distinct batch sizes


class SampleBudget:
    """Capacities of the compacted sample batches, one per (pass, sample count), learned from earlier steps' counts."""

    def __init__(self) -> None:
        self.counts: dict[str, deque[int]] = {}
        self.step_counts: dict[str, torch.Tensor] = {}  # this step's device counts, by key
        self.overflow: torch.Tensor | None = None

    def capacity(self, key: str, total: int) -> int | None:
        """The batch size for `key`'s `total` samples, or None while no count has been read (then compact exactly)."""
        seen = self.counts.get(key)
        if not seen:
            return None
        return min(total, max(GRAIN, math.ceil(max(seen) * MARGIN / GRAIN) * GRAIN))

    def compact(self, name: str, occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(indices to evaluate, their slots) for pass `name`'s flat mask `occupied`, both of the budget's size; None
        while there is no budget for it yet (the caller compacts exactly).

        Padding evaluates sample 0 and writes to slots N, N+1, ... past the real ones (each written once), which
        the caller drops.
        """
        total = occupied.shape[0]
        key = f"{name}:{total}"  # a checkpointed render's last, smaller chunk has its own
        capacity = self.capacity(key, total)
        count = occupied.sum()
        self.step_counts[key] = torch.maximum(self.step_counts[key], count) if key in self.step_counts else count
        if capacity is None:
            return None
        over = count > capacity
        self.overflow = over if self.overflow is None else self.overflow | over
        index = torch.nonzero_static(occupied, size=capacity, fill_value=-1).squeeze(-1)
        padding = index < 0
        slots = torch.where(padding, total + torch.arange(capacity, device=index.device), index)
        return index.clamp(min=0), slots

    def take(self) -> dict[str, torch.Tensor]:
        """This step's device values to read back with its log: each key's count and whether any batch overflowed."""
        values = {f"count:{key}": count for key, count in self.step_counts.items()}
        if self.overflow is not None:
            values["overflow"] = self.overflow
        self.step_counts, self.overflow = {}, None
        return values

    def observe(self, values: dict[str, float]) -> None:
        """Learn from a step's read values (take()'s names): the capacities follow its counts."""
        if values.get("overflow"):
            # Its later passes' counts are off (the fine samples follow the truncated coarse ones): start over, with
            # the next step read back compacting exactly.
            self.counts.clear()
            return
        for name, count in values.items():
            if name.startswith("count:"):
                self.counts.setdefault(name[len("count:"):], deque(maxlen=WINDOW)).append(int(count))
