"""Occupancy grid for empty-space skipping in training renders (instant-ngp's density grid, dense samples kept)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hifa.errors import require

UPDATE_CHUNK = 1 << 18  # cells whose density is probed per field call during an update


@dataclass(frozen=True)
class OccupancyConfig:
    """Binary occupancy grid over the field's bound: resolution (0 = off), update schedule, decay, threshold."""

    resolution: int = 0
    update_every: int = 16
    decay: float = 0.95
    # Absolute, not instant-ngp's min(mean, threshold): a skipped sample then changes alpha by at most
    # 1 - exp(-threshold * delta) (~1e-4 at the presets' spacing), so the render stays that close to dense.
    threshold: float = 0.01
    # Cells within this many cells of an occupied one count as occupied (a skipped cell gets no gradient;
    # a margin lets the surface grow into it). 1 or 2 cells did not change HiFA's oracle PSNR and evaluate
    # the field at more samples, so the default is none.
    dilation: int = 0

    def __post_init__(self) -> None:
        require(self.resolution == 0 or 2 <= self.resolution <= 512, "renderer.occupancy.resolution", "must be 0 (off) or lie in [2, 512]")
        require(self.update_every >= 1, "renderer.occupancy.update_every", "must be positive")
        require(0.0 <= self.decay < 1.0, "renderer.occupancy.decay", "must lie in [0, 1)")
        require(self.threshold >= 0, "renderer.occupancy.threshold", "must be >= 0")
        require(self.dilation >= 0, "renderer.occupancy.dilation", "must be >= 0 cells")


def dilate(occupied: torch.Tensor, resolution: int, cells: int) -> torch.Tensor:
    """Flat (res^3,) mask grown by `cells` cells along every axis (a cube neighbourhood)."""
    if cells == 0:
        return occupied
    grid = occupied.view(1, 1, resolution, resolution, resolution).float()
    grown = nn.functional.max_pool3d(grid, kernel_size=2 * cells + 1, stride=1, padding=cells)
    return grown.view(-1) > 0


class OccupancyGrid(nn.Module):
    """Cells of [-bound, bound]^3 whose decayed maximum density exceeds the threshold.

    Starts all occupied (nothing skipped until the first update). Its buffers are not in the
    renderer's state_dict (a run may switch the grid on or off on resume); the trainer saves
    `grid_state()` in its checkpoint instead.
    """

    def __init__(self, config: OccupancyConfig, bound: float):
        super().__init__()
        require(config.resolution >= 2, "renderer.occupancy.resolution", "must be >= 2 to build a grid")
        self.config, self.bound = config, bound
        cells = config.resolution**3
        self.register_buffer("density", torch.zeros(cells), persistent=False)
        self.register_buffer("occupied", torch.ones(cells, dtype=torch.bool), persistent=False)

    def cell_index(self, points: torch.Tensor) -> torch.Tensor:
        """Flat cell index (N,) of (N, 3) points; points outside the bound fall in the border cell, as the field clamps them."""
        res = self.config.resolution
        ijk = ((points + self.bound) * (res / (2 * self.bound))).floor().long().clamp(0, res - 1)
        return (ijk[:, 0] * res + ijk[:, 1]) * res + ijk[:, 2]

    def occupied_at(self, points: torch.Tensor) -> torch.Tensor:
        """Whether each of (N, 3) points lies in an occupied cell, (N,) bool."""
        return self.occupied[self.cell_index(points)]

    def cell_centres(self, cells: torch.Tensor) -> torch.Tensor:
        """Centres (N, 3) of flat cell indices (N,)."""
        res = self.config.resolution
        ijk = torch.stack([cells // (res * res), (cells // res) % res, cells % res], dim=-1)
        return -self.bound + (ijk.to(self.density.dtype) + 0.5) * (2 * self.bound / res)

    @torch.no_grad()
    def update(self, field: nn.Module, generator: torch.Generator | None = None) -> None:
        """Probe the field once per cell (centre + uniform jitter), decay the old maxima, re-threshold."""
        cfg, device = self.config, self.density.device
        cell = 2 * self.bound / cfg.resolution
        fresh = torch.empty_like(self.density)
        gen_device = generator.device if generator is not None else device
        for start in range(0, fresh.shape[0], UPDATE_CHUNK):
            stop = min(start + UPDATE_CHUNK, fresh.shape[0])
            jitter = torch.rand(stop - start, 3, generator=generator, device=gen_device).to(device, fresh.dtype)
            centres = self.cell_centres(torch.arange(start, stop, device=device))
            fresh[start:stop] = field.density(centres + (jitter - 0.5) * cell).to(fresh.dtype)
        self.density.copy_(torch.maximum(self.density * cfg.decay, fresh))
        self.occupied.copy_(dilate(self.density > cfg.threshold, cfg.resolution, cfg.dilation))

    def occupancy(self) -> float:
        """Fraction of occupied cells."""
        return float(self.occupied.float().mean())

    def grid_state(self) -> dict[str, torch.Tensor]:
        """The grid's state for a checkpoint."""
        return {"density": self.density.clone(), "occupied": self.occupied.clone()}

    def load_grid_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore `grid_state()`; a grid of another resolution is an error."""
        for name in ("density", "occupied"):
            value = state[name]
            if value.shape != getattr(self, name).shape:
                raise ValueError(f"occupancy grid {name} has {value.numel()} cells, this run's grid {getattr(self, name).numel()}")
            getattr(self, name).copy_(value)
