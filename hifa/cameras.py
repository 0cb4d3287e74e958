"""Cameras: random training poses (method.md §6.5), evaluation orbits, rays, view labels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hifa.errors import require
from hifa.transfer import to_device

UP = (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class CameraSamplingConfig:
    """Ranges of the random training cameras; angles in degrees."""

    radius: tuple[float, float] = (3.0, 3.5)
    polar_deg: tuple[float, float] = (45.0, 105.0)
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    fovy_deg: tuple[float, float] = (10.0, 30.0)
    uniform_sphere_rate: float = 0.5

    def __post_init__(self) -> None:
        for key in ("radius", "polar_deg", "azimuth_deg", "fovy_deg"):
            lo, hi = getattr(self, key)
            require(lo <= hi, f"cameras.{key}", f"range must be (low, high) with low <= high, got ({lo}, {hi})")
        require(self.radius[0] > 1.0, "cameras.radius", "cameras must stay outside the unit bound (radius > 1)")
        require(0.0 <= self.polar_deg[0] and self.polar_deg[1] <= 180.0, "cameras.polar_deg", "must lie in [0, 180]")
        require(0.0 < self.fovy_deg[0] and self.fovy_deg[1] < 180.0, "cameras.fovy_deg", "must lie in (0, 180)")
        require(0.0 <= self.uniform_sphere_rate <= 1.0, "cameras.uniform_sphere_rate", "must lie in [0, 1]")


@dataclass
class Cameras:
    """A batch of B pinhole cameras looking at the origin (OpenGL convention: -z forward, +y up)."""

    c2w: torch.Tensor  # (B, 4, 4) camera-to-world
    fovy_deg: torch.Tensor  # (B,)
    polar_deg: torch.Tensor  # (B,) angle from +y
    azimuth_deg: torch.Tensor  # (B,) wrapped to (-180, 180]; 0 = front (+z)
    radius: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index: int | slice | torch.Tensor) -> Cameras:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Cameras(self.c2w[index], self.fovy_deg[index], self.polar_deg[index], self.azimuth_deg[index], self.radius[index])

    @property
    def origins(self) -> torch.Tensor:
        """Camera centres, (B, 3)."""
        return self.c2w[:, :3, 3]

    def rays(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through pixel centres: origins and unnormalised directions, each (B, H*W, 3)."""
        return camera_rays(self.c2w, self.fovy_deg, height, width)

    def labels(self) -> list[str]:
        """DreamFusion view labels (front / side / back / overhead) per camera."""
        return [view_label(float(a), float(p)) for a, p in zip(self.azimuth_deg, self.polar_deg)]

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(*(to_device(t, device) for t in (self.c2w, self.fovy_deg, self.polar_deg, self.azimuth_deg, self.radius)))


def wrap_azimuth(azimuth_deg: torch.Tensor) -> torch.Tensor:
    """Wrap degrees to (-180, 180]."""
    return 180.0 - torch.remainder(180.0 - azimuth_deg, 360.0)


def spherical_to_position(radius: torch.Tensor, polar_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> torch.Tensor:
    """(r sinθ sinφ, r cosθ, r sinθ cosφ): θ from +y, φ = 0 on +z (the front)."""
    theta, phi = torch.deg2rad(polar_deg), torch.deg2rad(azimuth_deg)
    return torch.stack(
        [radius * torch.sin(theta) * torch.sin(phi), radius * torch.cos(theta), radius * torch.sin(theta) * torch.cos(phi)],
        dim=-1,
    )


def look_at(positions: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-world matrices (B, 4, 4) for cameras at `positions` looking at `target`, up +y."""
    target = torch.zeros_like(positions) if target is None else target
    back = torch.nn.functional.normalize(positions - target, dim=-1)
    up = torch.tensor(UP, dtype=positions.dtype, device=positions.device).expand_as(back)
    right = torch.linalg.cross(up, back, dim=-1)
    # Straight above or below, "up" is parallel to the view axis; any perpendicular right works.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    fallback = torch.tensor((1.0, 0.0, 0.0), dtype=positions.dtype, device=positions.device).expand_as(back)
    right = torch.nn.functional.normalize(torch.where(degenerate, fallback, right), dim=-1)
    true_up = torch.linalg.cross(back, right, dim=-1)
    c2w = torch.eye(4, dtype=positions.dtype, device=positions.device).repeat(positions.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, back, positions
    return c2w


def make_cameras(radius: torch.Tensor, polar_deg: torch.Tensor, azimuth_deg: torch.Tensor, fovy_deg: torch.Tensor) -> Cameras:
    """Cameras on spheres around the origin from spherical coordinates (degrees)."""
    azimuth_deg = wrap_azimuth(azimuth_deg)
    c2w = look_at(spherical_to_position(radius, polar_deg, azimuth_deg))
    return Cameras(c2w, fovy_deg, polar_deg, azimuth_deg, radius)


def sample_cameras(n: int, config: CameraSamplingConfig, generator: torch.Generator | None = None) -> Cameras:
    """Random training cameras per method.md §6.5 (with the upper-hemisphere share)."""

    def uniform(lo_hi: tuple[float, float]) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    radius, fovy = uniform(config.radius), uniform(config.fovy_deg)
    polar, azimuth = uniform(config.polar_deg), uniform(config.azimuth_deg)
    use_sphere = torch.rand(n, generator=generator, dtype=torch.float64) < config.uniform_sphere_rate
    # normalise(U(-1,1), U(0,1), U(-1,1)): upper hemisphere, not exactly area-uniform (as the reference).
    direction = torch.stack(
        [
            2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1,
            torch.rand(n, generator=generator, dtype=torch.float64),
            2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1,
        ],
        dim=-1,
    )
    direction = torch.nn.functional.normalize(direction, dim=-1)
    sphere_polar = torch.rad2deg(torch.arccos(direction[:, 1].clamp(-1, 1)))
    sphere_azimuth = torch.rad2deg(torch.atan2(direction[:, 0], direction[:, 2]))
    polar = torch.where(use_sphere, sphere_polar, polar)
    azimuth = torch.where(use_sphere, sphere_azimuth, azimuth)
    cams = make_cameras(radius, polar, azimuth, fovy)
    return _as_float32(cams)


def orbit_cameras(
    n: int, polar_deg: float = 70.0, radius: float = 3.2, fovy_deg: float = 20.0, start_azimuth_deg: float = 0.0
) -> Cameras:
    """n evaluation cameras evenly spaced in azimuth (defaults: method.md §6.5 test cameras)."""
    require(n > 0, "views", f"must be positive, got {n}")
    azimuth = start_azimuth_deg + 360.0 * torch.arange(n, dtype=torch.float64) / n
    full = lambda v: torch.full((n,), float(v), dtype=torch.float64)  # noqa: E731
    return _as_float32(make_cameras(full(radius), full(polar_deg), azimuth, full(fovy_deg)))


def sphere_cameras(n: int, radius: float = 3.2, fovy_deg: float = 20.0) -> Cameras:
    """n cameras spread evenly over the whole sphere (Fibonacci lattice), for reconstruction."""
    require(n > 0, "views", f"must be positive, got {n}")
    k = torch.arange(n, dtype=torch.float64) + 0.5
    polar = torch.rad2deg(torch.arccos(1 - 2 * k / n))
    azimuth = torch.rad2deg(math.pi * (1 + 5**0.5) * k)
    full = lambda v: torch.full((n,), float(v), dtype=torch.float64)  # noqa: E731
    return _as_float32(make_cameras(full(radius), polar, azimuth, full(fovy_deg)))


def camera_rays(c2w: torch.Tensor, fovy_deg: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole rays (method.md §3.1); direction z = -1 in camera space, so t is planar depth."""
    require(height > 0 and width > 0, "resolution", f"must be positive, got {height}x{width}")
    device, dtype = c2w.device, c2w.dtype
    focal = height / (2.0 * torch.tan(torch.deg2rad(fovy_deg.to(dtype)) / 2.0))  # (B,)
    py, px = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    x = (px.reshape(1, -1) - width / 2.0) / focal[:, None]
    y = -(py.reshape(1, -1) - height / 2.0) / focal[:, None]
    dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # (B, HW, 3)
    dirs = torch.einsum("bij,bnj->bni", c2w[:, :3, :3], dirs_cam)
    origins = c2w[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def view_label(azimuth_deg: float, polar_deg: float, front_deg: float = 60.0, overhead_deg: float = 30.0) -> str:
    """DreamFusion's label: overhead if polar <= 30°, else front / side / back by azimuth."""
    if polar_deg <= overhead_deg:
        return "overhead"
    a = float(wrap_azimuth(torch.tensor(azimuth_deg, dtype=torch.float64)))
    half = front_deg / 2.0
    if -half <= a < half:
        return "front"
    if a >= 180.0 - half or a < -(180.0 - half):
        return "back"
    return "side"


def _as_float32(cams: Cameras) -> Cameras:
    return Cameras(*(t.float() for t in (cams.c2w, cams.fovy_deg, cams.polar_deg, cams.azimuth_deg, cams.radius)))
