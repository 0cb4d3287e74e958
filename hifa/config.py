"""The training configuration: one typed dataclass tree, validated at construction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as default
from typing import Literal

from hifa.cameras import CameraSamplingConfig
from hifa.errors import require
from hifa.field import FieldConfig
from hifa.guidance.guidance import GuidanceConfig
from hifa.guidance.oracle import OracleConfig
from hifa.guidance.stable_diffusion import COMPILE_MODES, DEFAULT_MODEL, VAE_ATTENTIONS, CompileMode, Precision, VaeAttention
from hifa.mesh import MeshConfig
from hifa.renderer import RendererConfig

DEFAULT_DEPTH_MODEL = "Intel/dpt-hybrid-midas"


@dataclass(frozen=True)
class PriorConfig:
    """Which diffusion prior guides training: real Stable Diffusion or the oracle."""

    kind: Literal["stable-diffusion", "oracle"] = "stable-diffusion"
    model: str = DEFAULT_MODEL
    precision: Precision = "auto"
    # CUDA only: UNet and VAE in channels_last (measured slower on an H200, so off); torch.compile the UNet and
    # the VAE decoder (a one-off compile, then faster steps: benchmarks/results).
    channels_last: bool = False
    compile: bool = False
    # The UNet's torch.compile mode: 'reduce-overhead' replays it as CUDA graphs (HiFA K = 4 guidance: 122 -> 98 ms
    # on an H200).
    compile_mode: CompileMode = "default"
    # The VAE decoder's (no gradient, one shape a run): 'reduce-overhead' replays it as CUDA graphs too, so the host
    # no longer launches its ~35 convolutions one by one (not yet measured on a GPU).
    decoder_compile_mode: CompileMode = "default"
    compile_encoder: bool = False  # with compile: the VAE encoder too, forward and backward (measured in benchmarks/results)
    # The VAE's attention (one head, 512 wide): 'sdpa' (PyTorch's fused kernels) or 'math' (softmax(QK^T)V, three kernels).
    vae_attention: VaeAttention = "sdpa"
    oracle: OracleConfig = default(default_factory=OracleConfig)

    def __post_init__(self) -> None:
        require(self.compile_mode in COMPILE_MODES, "prior.compile_mode", f"must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        require(self.compile or not self.compile_encoder, "prior.compile_encoder", "needs prior.compile=true (it compiles the encoder too)")
        require(self.decoder_compile_mode in COMPILE_MODES, "prior.decoder_compile_mode", f"must be one of {COMPILE_MODES}, got {self.decoder_compile_mode!r}")
        require(self.compile or self.decoder_compile_mode == "default", "prior.decoder_compile_mode", "needs prior.compile=true (it compiles the decoder)")
        require(self.vae_attention in VAE_ATTENTIONS, "prior.vae_attention", f"must be one of {VAE_ATTENTIONS}, got {self.vae_attention!r}")


@dataclass(frozen=True)
class DepthConfig:
    """Depth supervision: weight at step 0 (annealed by 1 - sqrt(i/N)), loss and estimator model."""

    weight: float = 0.1
    loss: Literal["ssi", "pearson"] = "ssi"
    model: str = DEFAULT_DEPTH_MODEL
    compile: bool = False  # CUDA only: torch.compile the depth model (fixed input size, so one compile)
    # With compile: 'reduce-overhead' replays the depth model as CUDA graphs (no gradient, one shape; not yet measured on a GPU).
    compile_mode: CompileMode = "default"

    def __post_init__(self) -> None:
        require(self.weight >= 0, "depth.weight", "must be >= 0")
        require(self.compile_mode in COMPILE_MODES, "depth.compile_mode", f"must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        require(self.compile or self.compile_mode == "default", "depth.compile_mode", "needs depth.compile=true (it compiles the model)")


@dataclass(frozen=True)
class RegulariserConfig:
    """Weights of the geometry regularisers (method.md §5); 'ramp' terms use r(i) = min(1, 2i/N)."""

    zvar: float = 3.0
    z_entropy: float = 1e-2
    monotonicity: float = 1.0
    opacity_entropy: float = 1e-4
    sample_entropy: float = 0.0
    orientation: float = 0.0
    # Fraction of a step's rays that carry the orientation term (a random subset, so its mean over
    # rays stays unbiased); below 1 it saves finite-difference normals on a CPU budget.
    orientation_ray_fraction: float = 1.0

    def __post_init__(self) -> None:
        require(0 < self.orientation_ray_fraction <= 1, "regularisers.orientation_ray_fraction", "must lie in (0, 1]")
        for name in ("zvar", "z_entropy", "monotonicity", "opacity_entropy", "sample_entropy", "orientation"):
            require(getattr(self, name) >= 0, f"regularisers.{name}", "must be >= 0")


@dataclass(frozen=True)
class OptimConfig:
    """Adan learning rates, warm-up, gradient clipping and EMA."""

    lr: float = 5e-3
    grid_lr_scale: float = 10.0
    warmup_steps: int = 500
    grad_clip: float | None = 1.0
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        require(self.lr > 0, "optim.lr", "must be positive")
        require(self.grid_lr_scale > 0, "optim.grid_lr_scale", "must be positive")
        require(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        require(self.grad_clip is None or self.grad_clip > 0, "optim.grad_clip", "must be positive or null")
        require(self.ema_decay is None or 0 < self.ema_decay < 1, "optim.ema_decay", "must lie in (0, 1) or be null")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow: on or off, experiment name, store (null: results/mlflow.db or $HIFA_MLFLOW_DB)."""

    enabled: bool = True
    experiment: str = "hifa"
    tracking_uri: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; `preset` names the method preset it started from."""

    preset: str = "hifa"
    prompt: str = ""
    iterations: int = 10_000
    resolution: int = 512
    seed: int = 0
    device: str = "auto"  # 'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'; the field stays fp32
    shading: Literal["albedo", "lambertian-textureless"] = "albedo"
    textureless_rate: float = 0.2
    random_background_rate: float = 0.5
    nan_policy: Literal["stop", "skip"] = "stop"
    # CUDA: queue each step behind the last without waiting for the GPU (fixed-size sample batches, the NaN guard on
    # the device, a step's values read during the next step); the same results. No effect on a CPU.
    overlap_steps: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    val_every: int = 1000
    val_views: int = 4
    val_resolution: int = 128
    eval_views: int = 8
    field: FieldConfig = default(default_factory=FieldConfig)
    renderer: RendererConfig = default(default_factory=RendererConfig)
    cameras: CameraSamplingConfig = default(default_factory=CameraSamplingConfig)
    guidance: GuidanceConfig = default(default_factory=GuidanceConfig)
    prior: PriorConfig = default(default_factory=PriorConfig)
    depth: DepthConfig = default(default_factory=DepthConfig)
    regularisers: RegulariserConfig = default(default_factory=RegulariserConfig)
    optim: OptimConfig = default(default_factory=OptimConfig)
    mesh: MeshConfig = default(default_factory=MeshConfig)
    tracking: TrackingConfig = default(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        require(self.iterations >= 1, "iterations", f"must be positive, got {self.iterations}")
        require(self.resolution >= 8, "resolution", f"must be >= 8, got {self.resolution}")
        require(0 <= self.seed < 2**63, "seed", f"must lie in [0, 2^63), got {self.seed}")
        require(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None, "device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        require(0 <= self.textureless_rate <= 1, "textureless_rate", "must lie in [0, 1]")
        require(0 <= self.random_background_rate <= 1, "random_background_rate", "must lie in [0, 1]")
        for name in ("checkpoint_every", "log_every", "val_every", "val_views", "val_resolution", "eval_views"):
            require(getattr(self, name) >= 1, name, "must be positive")


def as_read_today(saved: dict) -> dict:
    """A saved config (config.yaml, a checkpoint's) as this version reads it: keys an older file lacks take their
    defaults, so a setting added since is no change; as saved when it no longer parses (a key since removed)."""
    from hifa.configio import from_dict, to_dict
    from hifa.errors import HifaError

    try:
        return to_dict(from_dict(TrainConfig, saved))
    except (HifaError, TypeError, ValueError):
        return saved
