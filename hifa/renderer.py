"""HiFA renderer: stratified + kernel-smoothed importance sampling, volume rendering (method.md §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from dataclasses import field as default

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hifa import volume
from hifa.background import BackgroundMLP
from hifa.cameras import Cameras
from hifa.compiled import RayMath
from hifa.errors import require
from hifa.field import SHADINGS, NeRFField, Shading, shade
from hifa.occupancy import OccupancyConfig, OccupancyGrid
from hifa.sample_budget import SampleBudget
from hifa.sampling import SMOOTHINGS, Smoothing, fine_u
from hifa.transfer import to_device

EAGER_MATH = RayMath()


@dataclass(frozen=True)
class RendererConfig:
    """Samples per ray, smoothing kernel, chunk sizes and empty-space skipping."""

    num_coarse: int = 128
    num_fine: int = 64
    smoothing: Smoothing = "boxcar"
    chunk_rays: int = 4096
    # Normals (finite differences, 6 density probes each) only where the detached weight exceeds this.
    # Every use weights them by w_k (shading, the normal image) or sg(w_k) (orientation), so skipped
    # samples change outputs by < threshold * |colour| per sample; 0 computes them everywhere.
    normal_weight_threshold: float = 0.0
    # > 0: renders with autograd run in chunks of this many rays, each under activation checkpointing, so
    # only a chunk's outputs outlive its forward (the field's activations are recomputed in backward).
    # Same outputs and gradients as one pass (memory for time: about one more forward). 0: one pass.
    checkpoint_chunk_rays: int = 0
    # Training renders skip the field at samples in empty cells (weights, z, pdf stay dense); resolution 0: off.
    occupancy: OccupancyConfig = default(default_factory=OccupancyConfig)
    # torch.compile the per-sample math of training renders (fine-sample placement, merging, weights, compositing)
    # and the trainer's regularisers and depth loss: fewer operators for the host to dispatch (a one-off compile).
    compile: bool = False

    def __post_init__(self) -> None:
        require(self.checkpoint_chunk_rays >= 0, "renderer.checkpoint_chunk_rays", "must be >= 0 (0: off)")
        require(self.normal_weight_threshold >= 0, "renderer.normal_weight_threshold", "must be >= 0")
        require(self.num_coarse >= 4, "renderer.num_coarse", f"must be >= 4, got {self.num_coarse}")
        require(self.num_fine >= 0, "renderer.num_fine", f"must be >= 0, got {self.num_fine}")
        require(self.smoothing in SMOOTHINGS, "renderer.smoothing", f"must be one of {SMOOTHINGS}, got {self.smoothing!r}")
        require(self.chunk_rays >= 1, "renderer.chunk_rays", "must be positive")


@dataclass
class RayOptions:
    """Per-call rendering options: training randomness, shading, background, view dependence.

    Renders with `training` false (validation, evaluation, exports) run the field's MLPs in fp32 whatever
    field.mlp_precision, so their metrics do not depend on the training precision or the device.
    """

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


@dataclass(frozen=True)
class RayDraws:
    """Every random number of one render, drawn before any field call so that chunks and recomputation reuse them."""

    jitter: torch.Tensor | None  # (R, T) coarse jitter; None outside training
    fine_u: torch.Tensor | None  # (R, F) CDF values of the fine samples; None without fine samples
    orient_rays: torch.Tensor | None  # (C,) the rays carrying `orient`, in output order; None: every ray

    def chunk(self, start: int, stop: int) -> RayDraws:
        """Draws of rays [start, stop), without an orientation subset (a checkpointed render orients it after its chunks)."""
        cut = lambda t: None if t is None else t[start:stop]  # noqa: E731
        return RayDraws(cut(self.jitter), cut(self.fine_u), None)


def orient_per_ray(weights: torch.Tensor, normals: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Orientation per ray (method.md §3.6): sum_k sg(w_k) max(0, n_k . d)^2, d unnormalised."""
    facing = (normals * directions[:, None, :]).sum(-1).clamp(min=0.0) ** 2
    return (weights.detach() * facing).sum(-1)


class Renderer(nn.Module):
    """Renders rays through a field with a background, returning every per-ray quantity of §3.6."""

    def __init__(self, field: NeRFField, background: BackgroundMLP, config: RendererConfig):
        super().__init__()
        self.field, self.background, self.config = field, background, config
        grid = config.occupancy
        self.occupancy = OccupancyGrid(grid, field.config.bound) if grid.resolution else None
        self.compiled_math = RayMath.compile() if config.compile else EAGER_MATH
        # Fixed-size compaction in training renders (overlap_steps: the trainer sets one and feeds it the counts).
        self.budget: SampleBudget | None = None

    def forward(self, origins: torch.Tensor, directions: torch.Tensor, options: RayOptions) -> dict[str, torch.Tensor]:
        """Render (R, 3) rays with autograd: one pass, or checkpointed chunks (same outputs) when configured.

        See `render_rays_chunked` for large batches without autograd.
        """
        draws = self.draw(origins, options)
        chunk = self.config.checkpoint_chunk_rays
        if chunk and torch.is_grad_enabled() and origins.shape[0] > chunk:
            return self._checkpointed(origins, directions, options, draws)
        return self._render(origins, directions, options, draws)

    def draw(self, origins: torch.Tensor, options: RayOptions) -> RayDraws:
        """The render's random numbers for all R rays, in the order a one-pass render draws them."""
        cfg, gen, R = self.config, options.generator, origins.shape[0]
        jitter = None
        if options.training:
            jitter = torch.rand(R, cfg.num_coarse, device=origins.device, dtype=origins.dtype, generator=gen)
        fine = fine_u(R, cfg.num_fine, not options.training, origins, gen) if cfg.num_fine > 0 else None
        orient = None
        if options.shading == "albedo" and options.need_normals and options.normal_ray_fraction < 1.0:
            # One uniform subset of ceil(fraction * R) rays of the whole batch, chunked or not: the mean of
            # `orient` over it is an unbiased estimate of the mean over all rays.
            count = max(1, math.ceil(options.normal_ray_fraction * R))
            perm = torch.randperm(R, generator=gen, device=gen.device if gen is not None else origins.device)
            orient = perm[:count].to(origins.device)
        return RayDraws(jitter, fine, orient)

    def _checkpointed(self, origins: torch.Tensor, directions: torch.Tensor, options: RayOptions, draws: RayDraws) -> dict[str, torch.Tensor]:
        """`_render` chunk by chunk under activation checkpointing, every output concatenated along rays."""
        chunk, R = self.config.checkpoint_chunk_rays, origins.shape[0]
        subset = draws.orient_rays is not None
        parts = []
        for start in range(0, R, chunk):
            stop = min(start + chunk, R)
            # An orientation subset is oriented after the chunks: no chunk needs normals then.
            opts = replace(options, need_normals=False) if subset else options
            if options.background is not None and options.background.dim() == 2:
                opts = replace(opts, background=options.background[start:stop])
            # The recompute in backward sees the same draws: no generator is touched inside.
            out = checkpoint(self._render, origins[start:stop], directions[start:stop], opts, draws.chunk(start, stop), use_reentrant=False)
            parts.append(out)
        merged = {key: torch.cat([part[key] for part in parts], dim=0) for key in parts[0]}
        if subset:  # on the merged samples (splitting the subset by chunk would wait for the GPU), checkpointed too
            merged["orient"] = checkpoint(self._orient_subset, origins, directions, merged["z_vals"], merged["weights"], draws.orient_rays,
                                          None, options.training and self.occupancy is not None, use_reentrant=False)
        return merged

    def _render(self, origins: torch.Tensor, directions: torch.Tensor, options: RayOptions, draws: RayDraws) -> dict[str, torch.Tensor]:
        """One pass over (R, 3) rays with the given draws."""
        cfg, bound = self.config, self.field.config.bound
        # Compiled math for training renders only: their shapes are fixed within a run (a checkpointed render's last
        # chunk adds one more graph), evaluation renders' chunks are not.
        ray_math = self.compiled_math if options.training else EAGER_MATH
        near, far = volume.near_far(origins, bound)
        T = cfg.num_coarse
        skip = self.occupancy is not None and options.training
        z_coarse = volume.coarse_z(near, far, T, draws.jitter)
        interval = (far - near) / T
        exact = not options.training
        sigma_c, rgb_c, occ_c = self._density(origins, directions, z_coarse, skip, options.view_dependent, exact)
        z_all, sigma_all, rgb_all, occ_all = z_coarse, sigma_c, rgb_c, occ_c
        if cfg.num_fine > 0:
            with torch.no_grad():
                z_fine = ray_math.fine_z(z_coarse.detach(), sigma_c.detach(), interval, cfg.smoothing, draws.fine_u)
            sigma_f, rgb_f, occ_f = self._density(origins, directions, z_fine, skip, options.view_dependent, exact, "fine")
            coarse, fine = (sigma_c, rgb_c, *((occ_c,) if skip else ())), (sigma_f, rgb_f, *((occ_f,) if skip else ()))
            z_all, merged = ray_math.merge(z_coarse, z_fine, coarse, fine)
            sigma_all, rgb_all, occ_all = merged[0], merged[1], merged[2] if skip else None
        delta, weights = ray_math.weigh(z_all, sigma_all, interval)
        samples = (z_all, sigma_all, rgb_all, delta, weights, occ_all)
        return self._outputs(origins, directions, samples, near, far, options, draws.orient_rays, ray_math)

    def _density(self, origins, directions, z, skip: bool, view_dependent: bool, exact: bool = False,
                 name: str = "coarse") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Density, albedo and (when skipping) occupancy of the samples; skipped ones get density 0, albedo 0.

        Albedo is per sample, so it is decoded here, before coarse and fine samples are merged: the
        merge then sorts 3 channels per sample instead of the field's feature width.
        """
        points = (origins[:, None, :] + directions[:, None, :] * z[..., None]).reshape(-1, 3)
        view_dirs = directions if view_dependent else None  # per ray: the field's SH term is computed once per ray
        if not skip:
            sigma, feat = self.field.density_features(points, exact)
            return sigma.view(z.shape), self.field.albedo(feat, view_dirs, z.shape[1], exact).view(*z.shape, 3), None
        occupied = self.occupancy.occupied_at(points)
        n = points.shape[0]
        fixed = self.budget.compact(name, occupied) if self.budget is not None else None
        if fixed is None:
            # Some backends (tiny-cuda-nn) reject empty batches; one evaluated sample is exact. Set on the device: an
            # `if` here would make the host wait for the GPU once more per pass (nonzero below waits anyway).
            occupied[0] |= ~occupied.any()
            keep = slots = occupied.nonzero().squeeze(-1)
            size = n
        else:  # a batch of fixed size (hifa.sample_budget): no wait; the padding's results land past slot n
            keep, slots = fixed
            size = n + keep.shape[0]
        sigma_kept, feat_kept = self.field.density_features(points[keep], exact)
        rgb_kept = self.field.albedo(feat_kept, view_dirs, torch.div(keep, z.shape[1], rounding_mode="floor"), exact)
        sigma = sigma_kept.new_zeros(size).index_copy(0, slots, sigma_kept)[:n]
        rgb = rgb_kept.new_zeros(size, 3).index_copy(0, slots, rgb_kept)[:n]
        return sigma.view(z.shape), rgb.view(*z.shape, 3), occupied.view(z.shape)

    def _outputs(self, origins, directions, samples, near, far, options: RayOptions, orient_rays, ray_math: RayMath) -> dict[str, torch.Tensor]:
        z, sigma, albedo, delta, weights, occupied = samples
        R, K = z.shape
        albedo = albedo.reshape(R * K, 3)
        normals = None
        if orient_rays is not None:
            subset = self._orient_subset(origins, directions, z, weights, orient_rays, occupied)
            normals_needed = False
        else:
            subset, normals_needed = None, options.need_normals or options.shading != "albedo"
        if normals_needed:
            points = (origins[:, None, :] + directions[:, None, :] * z[..., None]).reshape(-1, 3)
            normals = self._normals(points, weights.detach().reshape(-1), None if occupied is None else occupied.reshape(-1), options.training)
        color = shade(albedo, normals, options.shading, options.light_dir, options.ambient).view(R, K, 3)
        if options.background is None:
            bg = self.background(directions)
        else:
            bg = to_device(options.background, z.device).to(z.dtype).expand(R, 3)  # drawn on the host: no wait for the GPU
        out = ray_math.outputs(weights, z, delta, color, bg)
        out.update(weights=weights, z_vals=z, sigmas=sigma, deltas=delta, near=near, far=far, background=bg)
        if normals is not None:
            n = normals.view(R, K, 3)
            out["normals"] = volume.composite(weights, (n + 1.0) / 2.0, bg)
            out["orient"] = orient_per_ray(weights, n, directions)
        if subset is not None:
            out["orient"] = subset
        return out

    def _orient_subset(self, origins, directions, z, weights, rays: torch.Tensor, occupied, skip: bool = False) -> torch.Tensor:
        """`orient` on the drawn subset of rays (with normal_ray_fraction < 1, in training; its mean estimates the full mean).

        `occupied`: the samples' occupancy, (R, K), if they were skipped; or `skip`: look it up at the subset's samples.
        """
        K = z.shape[1]
        points = (origins[rays, None, :] + directions[rays, None, :] * z[rays, :, None]).reshape(-1, 3)
        w = weights[rays]
        keep = None if occupied is None else occupied[rays].reshape(-1)
        if skip:  # the same points as the render's samples, so the same cells
            keep = self.occupancy.occupied_at(points)
        normals = self._normals(points, w.detach().reshape(-1), keep, training=True).view(rays.numel(), K, 3)
        return orient_per_ray(w, normals, directions[rays])

    def _normals(self, points: torch.Tensor, weights: torch.Tensor, occupied: torch.Tensor | None = None,
                 training: bool = False) -> torch.Tensor:
        """Field normals at `points`; zero (not evaluated) where `weights` <= normal_weight_threshold or the sample was skipped.

        A skipped sample has density 0 without gradient, so its weight and every gradient through it are
        exactly 0: its normal cannot change any output. A training render with a sample budget evaluates them in
        a fixed-size batch.
        """
        threshold = self.config.normal_weight_threshold
        if threshold <= 0 and occupied is None:
            return self.field.normals(points)
        keep = weights > threshold if threshold > 0 else torch.ones_like(weights, dtype=torch.bool)
        if occupied is not None:
            keep = keep & occupied
        if training and self.budget is not None and (fixed := self.budget.compact("normals", keep)) is not None:
            index, slots = fixed  # no wait; the padding's normals land past the last point
            n = points.shape[0]
            return points.new_zeros(n + index.shape[0], 3).index_copy(0, slots, self.field.normals(points[index]))[:n]
        keep = keep.nonzero().squeeze(-1)
        normals = points.new_zeros(points.shape)
        if keep.numel() == 0:  # some backends (tiny-cuda-nn) reject empty batches
            return normals
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
