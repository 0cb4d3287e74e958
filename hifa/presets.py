"""Method presets (method.md §7) and the oracle world's CPU-budget profile."""

from __future__ import annotations

from dataclasses import replace

from hifa.cameras import CameraSamplingConfig
from hifa.config import DepthConfig, OptimConfig, PriorConfig, RegulariserConfig, TrainConfig
from hifa.encoding import HashGridConfig
from hifa.errors import HifaError
from hifa.field import FieldConfig
from hifa.guidance.guidance import GuidanceConfig
from hifa.guidance.oracle import OracleConfig
from hifa.mesh import MeshConfig
from hifa.renderer import RendererConfig


def hifa() -> TrainConfig:
    """'hifa': BGT+ with 4-step DDIM, sqrt annealing 200 -> 980, regularisers and depth (method.md §7.2)."""
    return TrainConfig(preset="hifa", mesh=MeshConfig(threshold=37.5))


def hifa_fast() -> TrainConfig:
    """'hifa-fast': 'hifa' at 256x256 with 64 + 32 samples (s_res = 0.25)."""
    return replace(hifa(), preset="hifa-fast", resolution=256, renderer=RendererConfig(num_coarse=64, num_fine=32))


def dreamfusion() -> TrainConfig:
    """'dreamfusion': SDS at 64x64, stable-dreamfusion's field and regularisers, suffix prompts."""
    return TrainConfig(
        preset="dreamfusion",
        resolution=64,
        shading="lambertian-textureless",
        field=FieldConfig(kind="dreamfusion", view_dependent_rate=0.0),
        renderer=RendererConfig(num_coarse=64, num_fine=32, smoothing="naive"),
        cameras=CameraSamplingConfig(uniform_sphere_rate=0.0),
        guidance=GuidanceConfig(method="sds", view_mode="suffix", schedule="uniform"),
        depth=DepthConfig(weight=0.0),
        regularisers=RegulariserConfig(zvar=0, z_entropy=0, monotonicity=0, opacity_entropy=0, sample_entropy=1e-3, orientation=1e-2),
        optim=OptimConfig(warmup_steps=0, grad_clip=None, ema_decay=0.95),
        mesh=MeshConfig(threshold=10.0),
    )


def _ablation(name: str, **changes) -> TrainConfig:
    base = hifa()
    return replace(base, preset=name, **{k: v(base) for k, v in changes.items()})


PRESETS = {
    "hifa": hifa,
    "hifa-fast": hifa_fast,
    "dreamfusion": dreamfusion,
    "hifa-no-anneal": lambda: _ablation("hifa-no-anneal", guidance=lambda c: replace(c.guidance, schedule="random")),
    "hifa-no-rgb": lambda: _ablation("hifa-no-rgb", guidance=lambda c: replace(c.guidance, lambda_rgb=0.0)),
    "hifa-no-depth": lambda: _ablation("hifa-no-depth", depth=lambda c: replace(c.depth, weight=0.0)),
    "hifa-no-zvar": lambda: _ablation("hifa-no-zvar", regularisers=lambda c: replace(c.regularisers, zvar=0.0)),
    "hifa-1step": lambda: _ablation("hifa-1step", guidance=lambda c: replace(c.guidance, denoising_steps=1)),
    "hifa-no-smoothing": lambda: _ablation("hifa-no-smoothing", renderer=lambda c: replace(c.renderer, smoothing="naive")),
}


def preset(name: str) -> TrainConfig:
    """A method preset by name, or a clear error listing them."""
    if name not in PRESETS:
        raise HifaError(f"unknown method {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()


def oracle_world(config: TrainConfig, budget: str = "cpu") -> TrainConfig:
    """Scale a preset to the oracle world: the oracle prior, its cameras, and a size for the budget.

    'cpu' fits 2 CPU cores in under 10 minutes: 64x64 renders (the oracle's resolution),
    fewer samples and steps, a smaller hash table.

    Three world settings, measured in benchmarks/results/train-oracle-cpu.md: a dense bank with a
    sharp, truncated view prior (otherwise the exact posterior ignores the view below t ~ 900;
    a view phrase keeps the OracleConfig default, its label's whole sector); CFG scale 1.5 (the
    oracle's all-scenes unconditional branch is far from the conditional one, so s = 100 saturates
    every colour; 1.5 beat 2 by 0.6-0.8 dB for 'hifa'); and HiFA's residual losses in the reference's
    units (the OracleConfig default `residual_units='reference'`: without it the depth term outweighs
    the guidance ~18x more than in the reference, and 'hifa' trailed 'dreamfusion' by 7 dB in the demo).

    The oracle's images are albedo on white, so renders are too: no random solid backgrounds (no
    candidate has them, so the exact posterior paints white floaters in front of them) and no
    lambertian/textureless shading ('dreamfusion'; a shaded render has no matching candidate and
    its colours would be pushed to undo the light). Normals are then needed only by the
    orientation loss, evaluated where a sample's weight matters (and, on the CPU budget, where it
    exceeds 1e-3, on a random 1/32 of each step's rays: an unbiased estimate of its mean at 1/32 of
    the cost; 'dreamfusion' spent 0.2-0.8 s per step on these normals at 1/16, measured).
    """
    oracle = OracleConfig(views=1200, tau_deg=4.0, view_cutoff_deg=9.0)
    scaled = replace(
        config,
        guidance=replace(config.guidance, guidance_scale=1.5),
        prior=PriorConfig(kind="oracle", oracle=oracle),
        shading="albedo",
        random_background_rate=0.0,
        renderer=replace(config.renderer, normal_weight_threshold=1e-4),
        cameras=replace(config.cameras, radius=(oracle.radius, oracle.radius), fovy_deg=(oracle.fovy_deg, oracle.fovy_deg)),
    )
    if budget == "full":
        return scaled
    if budget != "cpu":
        raise HifaError(f"unknown budget {budget!r}; choose 'cpu' or 'full'")
    grid = HashGridConfig(log2_hashmap_size=16, finest_resolution=512)
    return replace(
        scaled,
        iterations=900,
        resolution=64,
        checkpoint_every=100,
        val_every=200,
        field=replace(scaled.field, grid=grid),
        renderer=replace(scaled.renderer, num_coarse=48, num_fine=24, normal_weight_threshold=1e-3),
        optim=replace(scaled.optim, warmup_steps=min(scaled.optim.warmup_steps, 30)),
        mesh=replace(scaled.mesh, resolution=192, threshold=None, texture_size=512),
        regularisers=replace(scaled.regularisers, orientation_ray_fraction=1 / 32),
    )
