"""Multi-resolution hash-grid encoding (Instant-NGP), pure PyTorch, tiny-cuda-nn when available.

The pure-PyTorch path follows tiny-cuda-nn's conventions exactly (level scales, dense
levels below the table size, the prime XOR hash, parameter layout), so a table trained
with one backend loads into the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hifa.cpu_kernels import cpu_kernels
from hifa.errors import HifaError, require
from hifa.hashgrid_triton import LevelTable, TritonHashGrid
from hifa.triton_support import triton_available

PRIMES = (1, 2654435761, 805459861)
BACKENDS = ("auto", "torch", "cpp", "tcnn", "triton")


@dataclass(frozen=True)
class HashGridConfig:
    """Hash grid: levels x features, table size, resolutions (method.md §2)."""

    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    finest_resolution: int = 2048
    interpolation: Literal["smoothstep", "linear"] = "smoothstep"
    # auto: tiny-cuda-nn, else the Triton kernels on CUDA; the C++ kernel on CPU; else pure PyTorch.
    backend: Literal["auto", "torch", "cpp", "tcnn", "triton"] = "auto"

    def __post_init__(self) -> None:
        require(self.n_levels >= 1, "grid.n_levels", f"must be >= 1, got {self.n_levels}")
        require(self.n_features_per_level in (1, 2, 4, 8), "grid.n_features_per_level", "must be 1, 2, 4 or 8")
        require(8 <= self.log2_hashmap_size <= 24, "grid.log2_hashmap_size", "must lie in [8, 24]")
        require(self.base_resolution >= 2, "grid.base_resolution", "must be >= 2")
        require(self.finest_resolution >= self.base_resolution, "grid.finest_resolution", "must be >= base_resolution")
        require(self.interpolation in ("smoothstep", "linear"), "grid.interpolation", "must be 'smoothstep' or 'linear'")
        require(self.backend in BACKENDS, "grid.backend", f"must be one of {BACKENDS}, got {self.backend!r}")

    @property
    def per_level_scale(self) -> float:
        if self.n_levels == 1:
            return 1.0
        return math.exp(math.log(self.finest_resolution / self.base_resolution) / (self.n_levels - 1))

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features_per_level


@dataclass(frozen=True)
class Level:
    """One grid level: its scale, vertex resolution, table slice and whether it hashes."""

    scale: float
    resolution: int
    offset: int
    size: int
    hashed: bool


def grid_levels(config: HashGridConfig) -> list[Level]:
    """Level layout exactly as tiny-cuda-nn computes it (float32 scale, 8-aligned dense sizes)."""
    log2_scale = math.log2(config.per_level_scale)
    levels, offset = [], 0
    for level in range(config.n_levels):
        scale = float(torch.tensor(2.0 ** (level * log2_scale), dtype=torch.float32) * config.base_resolution - 1.0)
        resolution = math.ceil(scale) + 1
        dense = -(-(resolution**3) // 8) * 8
        size = min(dense, 1 << config.log2_hashmap_size)
        levels.append(Level(scale, resolution, offset, size, hashed=resolution**3 > size))
        offset += size
    return levels


def corner_indices(grid_pos: torch.Tensor, level: Level) -> torch.Tensor:
    """Table indices within the level of the 8 cell vertices of (N, 3) integer positions: (N, 8).

    Corner c has offset ((c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1); dense levels index
    x + y*res + z*res^2, hashed levels XOR the uint32 prime products (tiny-cuda-nn's hash).
    Integer arithmetic is int32: its wrap-around equals uint32 arithmetic in the low bits.
    """
    both = torch.stack([grid_pos, grid_pos + 1], dim=1).int()  # (N, 2, 3): floor and floor + 1
    x, y, z = both.unbind(-1)
    if level.hashed:
        tx, ty, tz = x * _as_int32(PRIMES[0]), y * _as_int32(PRIMES[1]), z * _as_int32(PRIMES[2])
        index = (tz[:, :, None, None] ^ ty[:, None, :, None] ^ tx[:, None, None, :]) & (level.size - 1)
    else:
        res = level.resolution
        index = torch.remainder((z * res * res)[:, :, None, None] + (y * res)[:, None, :, None] + x[:, None, None, :], level.size)
    return index.reshape(-1, 8).long()


def corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """Trilinear weights (N, 8) of the cell vertices, in corner_indices' order."""
    w = torch.stack([1.0 - frac, frac], dim=1)  # (N, 2, 3)
    wx, wy, wz = w.unbind(-1)
    return (wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]).reshape(-1, 8)


def encode_level(unit_points: torch.Tensor, table: torch.Tensor, level: Level, smoothstep: bool) -> torch.Tensor:
    """Interpolated features (N, F) of points in [0,1]^3 from one level's table (size, F)."""
    pos = unit_points * level.scale + 0.5
    floor = torch.floor(pos)
    frac = pos - floor
    if smoothstep:
        frac = frac * frac * (3.0 - 2.0 * frac)
    index = corner_indices(floor, level)  # (N, 8)
    values = table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])  # (N, 8, F)
    return (corner_weights(frac)[..., None] * values).sum(1)


class HashGridEncoding(nn.Module):
    """Encodes points in [-bound, bound]^3 to n_levels * n_features features."""

    def __init__(self, config: HashGridConfig, bound: float = 1.0):
        super().__init__()
        self.config, self.bound = config, bound
        self.levels = grid_levels(config)
        # One parameter per level: a level's gradient then only touches its own entries.
        self.tables = nn.ParameterList(
            nn.Parameter(torch.empty(level.size, config.n_features_per_level).uniform_(-1e-4, 1e-4))
            for level in self.levels
        )
        self._tcnn: nn.Module | None = None
        self._layouts: dict[torch.device, LevelTable] = {}
        if config.backend == "tcnn" and not tcnn_available():
            raise HifaError("grid.backend 'tcnn' needs CUDA and the tinycudann package; use backend 'torch' or 'auto'")
        if config.backend == "triton" and not triton_available():
            raise HifaError("grid.backend 'triton' needs the triton package (it ships with CUDA builds of torch); use backend 'torch' or 'auto'")
        if config.backend == "cpp" and cpu_kernels() is None:
            raise HifaError("grid.backend 'cpp' needs a C++ compiler to build the CPU kernel; use backend 'torch' or 'auto'")

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def uses_tcnn(self, device: torch.device) -> bool:
        """Whether points on `device` go through tiny-cuda-nn."""
        return device.type == "cuda" and self.config.backend in ("auto", "tcnn") and tcnn_available()

    def uses_triton(self, unit: torch.Tensor) -> bool:
        """Whether these points go through the Triton kernels (no gradient w.r.t. points).

        'auto' picks them on CUDA only; 'triton' also on CPU, through Triton's (slow) interpreter.
        """
        if unit.requires_grad or not triton_available():
            return False
        if self.config.backend == "triton":
            return True
        return self.config.backend == "auto" and unit.device.type == "cuda" and not self.uses_tcnn(unit.device)

    def uses_cpp(self, unit: torch.Tensor) -> bool:
        """Whether these points go through the C++ CPU kernel (float32, no gradient w.r.t. points)."""
        return (
            unit.device.type == "cpu"
            and unit.dtype == torch.float32
            and not unit.requires_grad
            and self.config.backend in ("auto", "cpp")
            and cpu_kernels() is not None
        )

    def kernel_args(self) -> tuple:
        """Level layout as the C++ kernel takes it."""
        return (
            [lv.scale for lv in self.levels],
            [lv.resolution for lv in self.levels],
            [lv.hashed for lv in self.levels],
            self.config.interpolation == "smoothstep",
            torch.get_num_threads(),
        )

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N, L*F) features; points outside the bound are clamped onto it."""
        unit = ((points / self.bound + 1.0) / 2.0).clamp(0.0, 1.0)
        if self.uses_tcnn(points.device):
            return self._tcnn_forward(unit)
        if self.uses_triton(unit):
            flat = torch.cat([t.reshape(-1) for t in self.tables])
            return TritonHashGrid.apply(unit, flat, self._triton_layout(unit.device))
        if self.uses_cpp(unit):
            return _CppHashGrid.apply(unit, self, *self.tables)
        smooth = self.config.interpolation == "smoothstep"
        return torch.cat([encode_level(unit, t, lv, smooth) for t, lv in zip(self.tables, self.levels)], dim=-1)

    def _triton_layout(self, device: torch.device) -> LevelTable:
        layout = self._layouts.get(device)
        if layout is None:
            smooth = self.config.interpolation == "smoothstep"
            layout = self._layouts[device] = LevelTable(self.levels, self.config.n_features_per_level, smooth, device)
        return layout

    def _tcnn_forward(self, unit: torch.Tensor) -> torch.Tensor:
        if self._tcnn is None:
            self._tcnn = _make_tcnn_encoding(self.config).to(unit.device)
            if self._tcnn.params.numel() != sum(t.numel() for t in self.tables):
                raise HifaError("tiny-cuda-nn's grid layout differs from the PyTorch one; use grid.backend 'torch'")
        # tcnn's forward reads `self.params`; handing it our flat tables keeps one set of
        # parameters (same checkpoint, optimiser and gradients for both backends).
        self._tcnn._parameters["params"] = torch.cat([t.reshape(-1) for t in self.tables])
        return self._tcnn(unit).float()

    def __setattr__(self, name: str, value: object) -> None:
        # Keep the tcnn module out of the module tree so its params never enter state_dict.
        if name in ("_tcnn", "_layouts"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class _CppHashGrid(torch.autograd.Function):
    """The C++ CPU kernel: forward features, backward gradients of the level tables."""

    @staticmethod
    def forward(ctx, unit, encoding, *tables):  # type: ignore[override]
        ctx.save_for_backward(unit, *tables)
        ctx.kernel_args = encoding.kernel_args()
        return cpu_kernels().forward(unit.contiguous(), [t.detach() for t in tables], *ctx.kernel_args)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        unit, *tables = ctx.saved_tensors
        grads = cpu_kernels().backward(grad, unit, [t.detach() for t in tables], *ctx.kernel_args)
        return (None, None, *grads)


def _as_int32(value: int) -> int:
    return value - (1 << 32) if value >= (1 << 31) else value


def _make_tcnn_encoding(config: HashGridConfig) -> nn.Module:
    import tinycudann as tcnn  # optional CUDA dependency

    return tcnn.Encoding(
        3,
        {
            "otype": "HashGrid",
            "n_levels": config.n_levels,
            "n_features_per_level": config.n_features_per_level,
            "log2_hashmap_size": config.log2_hashmap_size,
            "base_resolution": config.base_resolution,
            "per_level_scale": config.per_level_scale,
            "interpolation": "Smoothstep" if config.interpolation == "smoothstep" else "Linear",
        },
        dtype=torch.float32,
    )


def tcnn_available() -> bool:
    """Whether tiny-cuda-nn can be used (CUDA present and tinycudann importable)."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:  # tinycudann raises various errors when its CUDA build mismatches
        return False
    return True
