"""HiFA renderer: stratified + kernel-smoothed importance sampling, volume rendering (method.md §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from hifa import volume
from hifa.background import BackgroundMLP
from hifa.cameras import Cameras
from hifa.errors import require
from hifa.field import SHADINGS, NeRFField, Shading, shade
from hifa.sampling import SMOOTHINGS, Smoothing, importance_samples


@dataclass(frozen=True)
class RendererConfig:
    """Samples per ray, smoothing kernel and chunk size."""

    num_coarse: int = 128
    num_fine: int = 64
    smoothing: Smoothing = "boxcar"
    chunk_rays: int = 4096
    # Normals (finite differences, 6 density probes each) only where the detached weight exceeds this.
    # Every use weights them by w_k (shading, the normal image) or sg(w_k) (orientation), so skipped
    # samples change outputs by < threshold * |colour| per sample; 0 computes them everywhere.
    normal_weight_threshold: float = 0.0

    def __post_init__(self) -> None:
        require(self.normal_weight_threshold >= 0, "renderer.normal_weight_threshold", "must be >= 0")
        require(self.num_coarse >= 4, "renderer.num_coarse", f"must be >= 4, got {self.num_coarse}")
        require(self.num_fine >= 0, "renderer.num_fine", f"must be >= 0, got {self.num_fine}")
        require(self.smoothing in SMOOTHINGS, "renderer.smoothing", f"must be one of {SMOOTHINGS}, got {self.smoothing!r}")
        require(self.chunk_rays >= 1, "renderer.chunk_rays", "must be positive")


@dataclass
class RayOptions:
    """Per-call rendering options: training randomness, shading, background, view dependence."""

    training: bool = False
    shading: Shading = "albedo"
    background: torch.Tensor | None = None  # (3,) or (R, 3) solid colour; None = background MLP
    light_dir: torch.Tensor | None = None
    ambient: float = 0.1
    view_dependent: bool = True
    need_normals: bool = False
    # With albedo shading, normals (and `orient`) only on this random fraction of the rays; the
    # normal image is then not rendered. 1.0: every ray.
    normal_ray_fraction: float = 1.0
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        require(self.shading in SHADINGS, "shading", f"must be one of {SHADINGS}, got {self.shading!r}")


def orient_per_ray(weights: torch.Tensor, normals: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Orientation per ray (method.md §3.6): sum_k sg(w_k) max(0, n_k . d)^2, d unnormalised."""
    facing = (normals * directions[:, None, :]).sum(-1).clamp(min=0.0) ** 2
    return (weights.detach() * facing).sum(-1)


class Renderer(nn.Module):
    """Renders rays through a field with a background, returning every per-ray quantity of §3.6."""

    def __init__(self, field: NeRFField, background: BackgroundMLP, config: RendererConfig):
        super().__init__()
        self.field, self.background, self.config = field, background, config

    def forward(self, origins: torch.Tensor, directions: torch.Tensor, options: RayOptions) -> dict[str, torch.Tensor]:
        """Render (R, 3) rays in one pass (with autograd); see `render_rays_chunked` for large batches."""
        cfg, bound = self.config, self.field.config.bound
        near, far = volume.near_far(origins, bound)
        T = cfg.num_coarse
        jitter = None
        if options.training:
            jitter = torch.rand(origins.shape[0], T, device=origins.device, dtype=origins.dtype, generator=options.generator)
        z_coarse = volume.coarse_z(near, far, T, jitter)
        interval = (far - near) / T
        sigma_c, feat_c = self._density(origins, directions, z_coarse)
        z_all, sigma_all, feat_all = z_coarse, sigma_c, feat_c
        if cfg.num_fine > 0:
            delta_c = volume.deltas(z_coarse, interval).detach()
            _, w_c = volume.alpha_weights(sigma_c.detach(), delta_c)
            z_fine = importance_samples(
                z_coarse.detach(),
                delta_c,
                w_c,
                cfg.num_fine,
                cfg.smoothing,
                deterministic=not options.training,
                generator=options.generator,
            )
            sigma_f, feat_f = self._density(origins, directions, z_fine)
            z_all, order = torch.sort(torch.cat([z_coarse, z_fine], dim=-1), dim=-1)
            sigma_all = torch.cat([sigma_c, sigma_f], dim=-1).gather(-1, order)
            feat_all = torch.cat([feat_c, feat_f], dim=1)
            feat_all = feat_all.gather(1, order[..., None].expand(-1, -1, feat_all.shape[-1]))
        delta = volume.deltas(z_all, interval)
        _, weights = volume.alpha_weights(sigma_all, delta)
        return self._outputs(origins, directions, z_all, sigma_all, feat_all, delta, weights, near, far, options)

    def _density(self, origins: torch.Tensor, directions: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        points = origins[:, None, :] + directions[:, None, :] * z[..., None]
        sigma, feat = self.field.density_features(points.reshape(-1, 3))
        return sigma.view(z.shape), feat.view(*z.shape, -1)

    def _outputs(self, origins, directions, z, sigma, feat, delta, weights, near, far, options) -> dict[str, torch.Tensor]:
        R, K = z.shape
        view_dirs = directions[:, None, :].expand(R, K, 3).reshape(-1, 3) if options.view_dependent else None
        albedo = self.field.albedo(feat.reshape(R * K, -1), view_dirs)
        normals = None
        if options.shading == "albedo" and options.need_normals and options.normal_ray_fraction < 1.0:
            subset = self._orient_subset(origins, directions, z, weights, options)
            normals_needed = False
        else:
            subset, normals_needed = None, options.need_normals or options.shading != "albedo"
        if normals_needed:
            points = (origins[:, None, :] + directions[:, None, :] * z[..., None]).reshape(-1, 3)
            normals = self._normals(points, weights.detach().reshape(-1))
        color = shade(albedo, normals, options.shading, options.light_dir, options.ambient).view(R, K, 3)
        if options.background is None:
            bg = self.background(directions)
        else:
            bg = options.background.to(z).expand(R, 3)
        opacity = weights.sum(-1)
        out = {
            "image": volume.composite(weights, color, bg).clamp(0.0, 1.0),
            "depth": volume.expected_depth(weights, z),
            "opacity": opacity,
            "weights": weights,
            "z_vals": z,
            "sigmas": sigma,
            "deltas": delta,
            "pdf": volume.sample_pdf_density(weights, delta),
            "near": near,
            "far": far,
            "z_variance": volume.z_variance(weights, z),
            "background": bg,
        }
        if normals is not None:
            n = normals.view(R, K, 3)
            out["normals"] = volume.composite(weights, (n + 1.0) / 2.0, bg)
            out["orient"] = orient_per_ray(weights, n, directions)
        if subset is not None:
            out["orient"] = subset
        return out

    def _orient_subset(self, origins, directions, z, weights, options: RayOptions) -> torch.Tensor:
        """`orient` on a random subset of ceil(fraction * R) rays (its mean estimates the full mean)."""
        R, K = z.shape
        count = max(1, math.ceil(options.normal_ray_fraction * R))
        gen = options.generator
        rays = torch.randperm(R, generator=gen, device=gen.device if gen is not None else z.device)[:count].to(z.device)
        points = (origins[rays, None, :] + directions[rays, None, :] * z[rays, :, None]).reshape(-1, 3)
        w = weights[rays]
        normals = self._normals(points, w.detach().reshape(-1)).view(count, K, 3)
        return orient_per_ray(w, normals, directions[rays])

    def _normals(self, points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Field normals at `points`; zero where `weights` <= normal_weight_threshold (not evaluated)."""
        threshold = self.config.normal_weight_threshold
        if threshold <= 0:
            return self.field.normals(points)
        keep = (weights > threshold).nonzero().squeeze(-1)
        normals = points.new_zeros(points.shape)
        return normals.index_copy(0, keep, self.field.normals(points[keep]))

    def render_rays_chunked(self, origins: torch.Tensor, directions: torch.Tensor, options: RayOptions) -> dict[str, torch.Tensor]:
        """Render any number of rays in chunks of `chunk_rays` (keeps per-ray outputs only)."""
        chunks: dict[str, list[torch.Tensor]] = {}
        for start in range(0, origins.shape[0], self.config.chunk_rays):
            sl = slice(start, start + self.config.chunk_rays)
            opts = options
            if options.background is not None and options.background.dim() == 2:
                opts = replace(options, background=options.background[sl])
            out = self(origins[sl], directions[sl], opts)
            for key, value in out.items():
                if value.dim() <= 1 or key in ("image", "normals", "background"):
                    chunks.setdefault(key, []).append(value)
        return {key: torch.cat(values, dim=0) for key, values in chunks.items()}

    @torch.no_grad()
    def render_views(self, cameras: Cameras, height: int, width: int, options: RayOptions | None = None) -> dict[str, torch.Tensor]:
        """Evaluation renders of each camera: image (B,H,W,3), depth/opacity (B,H,W), normals if asked."""
        options = options or RayOptions(background=torch.ones(3))
        device = next(self.parameters()).device
        origins, dirs = cameras.to(device).rays(height, width)
        views: dict[str, list[torch.Tensor]] = {}
        for b in range(len(cameras)):
            out = self.render_rays_chunked(origins[b], dirs[b], options)
            for key in ("image", "depth", "opacity", "normals", "z_variance"):
                if key in out:
                    views.setdefault(key, []).append(out[key].reshape(height, width, *out[key].shape[1:]))
        return {key: torch.stack(value) for key, value in views.items()}
