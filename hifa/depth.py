"""Depth supervision (method.md §5.1): the scale/shift-invariant disparity loss and depth estimators.

The losses take the renderer's `depth` (Σ w z, not divided by O), its `opacity` and an
estimator's relative disparity, per image (H, W) or batched (B, H, W), and return the
unweighted term; the trainer multiplies by λ_d(i)·0.05·256²·½ (or λ_d(i) for the Pearson
variant).
"""

from __future__ import annotations

import functools
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from hifa.errors import HifaError

DEFAULT_DEPTH_MODEL = "Intel/dpt-hybrid-midas"
MASK_THRESHOLD = 0.5
_TINY = 1e-30  # only guards exact zeros (constant d or y), never changes a regular value


def _flat_masked(depth: torch.Tensor, opacity: torch.Tensor, estimate: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, N) depth, opacity, estimate (unmasked pixels set to safe constants), mask weights and pixel counts (B, 1).

    Masked sums over every pixel replace `x[mask]`: boolean indexing has a data-dependent size, so on CUDA the
    host would wait for the whole forward pass (the diffusion networks included) before it could go on.
    """
    if not (depth.shape == opacity.shape == estimate.shape) or depth.dim() not in (2, 3):
        raise HifaError(
            f"depth loss: depth, opacity and estimate must all be (H, W) or (B, H, W); "
            f"got {tuple(depth.shape)}, {tuple(opacity.shape)}, {tuple(estimate.shape)}"
        )
    batch = 1 if depth.dim() == 2 else depth.shape[0]
    # At least fp32: _TINY is 0 in fp16, and an image without masked pixels would then give 0/0.
    dtype = torch.promote_types(depth.dtype, torch.float32)
    depth, opacity, estimate = (t.reshape(batch, -1).to(dtype) for t in (depth, opacity, estimate.detach()))
    mask = opacity.detach() > MASK_THRESHOLD
    # Constants where unmasked, so no 0/0 there can reach the loss or (as 0 * inf) its gradient.
    z = torch.where(mask, depth, torch.ones_like(depth))
    o = torch.where(mask, opacity, torch.ones_like(opacity))
    y = torch.where(mask, estimate, torch.ones_like(depth))
    return z, o, y, mask.to(depth.dtype), mask.sum(-1, keepdim=True)


def _centred(x: torch.Tensor, m: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """x minus its mean over the mask, zero off the mask."""
    return (x - (x * m).sum(-1, keepdim=True) / n.clamp(min=1)) * m


def _per_image_mean(loss: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Per-image losses (B, 1), zero (with a gradient path) where fewer than 2 pixels are masked; their batch mean."""
    return torch.where(n >= 2, loss, torch.zeros_like(loss)).mean()


def ssi_depth_loss(depth: torch.Tensor, opacity: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """mean_M((c·p - ŷ)²) on M = {O > 0.5}: least-squares affine fit of disparity O/depth to the standardised estimate.

    (B, H, W) inputs average the per-image losses; an image with fewer than 2 masked pixels contributes 0.
    """
    z, o, y, m, n = _flat_masked(depth, opacity, estimate)
    d = o / z  # 1 / (depth / O)
    y_c = _centred(y, m, n)
    y_hat = y_c / ((y_c * y_c).sum(-1, keepdim=True) / (n - 1).clamp(min=1)).sqrt().clamp(min=_TINY)
    p = _centred(d, m, n)
    c = (p * y_hat).sum(-1, keepdim=True) / (p * p).sum(-1, keepdim=True).clamp(min=_TINY)  # not detached
    r = c * p - y_hat  # zero off the mask
    return _per_image_mean((r * r).sum(-1, keepdim=True) / n.clamp(min=1), n)


def pearson_depth_loss(depth: torch.Tensor, opacity: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """1 - Pearson(depth/O, 1/y) on M = {O > 0.5}: the ablation variant of §5.1."""
    z, o, y, m, n = _flat_masked(depth, opacity, estimate)
    a = _centred(z / o, m, n)
    b = _centred(1.0 / y.clamp(min=1e-6), m, n)  # estimated depth from relative disparity (assumed positive on M)
    norms = (a * a).sum(-1, keepdim=True) * (b * b).sum(-1, keepdim=True)
    # sqrt(0)'s infinite derivative would turn an unused image's zero gradient into NaN: 1 there instead.
    norms = torch.where(n >= 2, norms, torch.ones_like(norms))
    rho = (a * b).sum(-1, keepdim=True) / norms.sqrt().clamp(min=_TINY)
    return _per_image_mean(1.0 - rho, n)


@runtime_checkable
class DepthEstimator(Protocol):
    """Monocular relative-disparity estimator used by the depth loss."""

    def estimate(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> relative disparity (B, H', W'), (H', W') = size or (H, W)."""
        ...


def _target_size(images: torch.Tensor, size: tuple[int, int] | None) -> tuple[int, int]:
    if images.dim() != 4 or images.shape[1] != 3:
        raise HifaError(f"depth estimator: expected images (B, 3, H, W), got {tuple(images.shape)}")
    return (int(images.shape[-2]), int(images.shape[-1])) if size is None else (int(size[0]), int(size[1]))


# transformers' torchvision-backed image processors: 'TorchvisionBackend' from 5.2x, 'BaseImageProcessorFast' before.
TORCH_PROCESSOR_BASES = ("TorchvisionBackend", "BaseImageProcessorFast")


def takes_device_tensors(processor) -> bool:
    """Whether an image processor resizes and normalises torch tensors on a given device (not PIL on the host)."""
    return any(base.__name__ in TORCH_PROCESSOR_BASES for base in type(processor).__mro__)


@functools.cache
def _prestandardised_conv():
    """BiT's weight-standardised convolution whose weights were standardised once, ahead of time (frozen models only)."""
    from transformers.models.bit.modeling_bit import WeightStandardizedConv2d

    class PrestandardisedConv2d(WeightStandardizedConv2d):
        def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
            if self.pad is not None:
                hidden_state = self.pad(hidden_state)
            return F.conv2d(hidden_state, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    return WeightStandardizedConv2d, PrestandardisedConv2d


@torch.no_grad()
def prestandardise_weights(model: torch.nn.Module) -> int:
    """Standardise the weights of a frozen model's BiT convolutions once, in place, instead of at every call.

    The default depth model, DPT-hybrid, has 52 of them in its ResNet stem; each call re-standardised every
    weight (a batch norm over it) before its convolution. The depth model is never trained, so the result is the
    same weights, computed once with the same operation on the same device and dtype. Returns how many changed.
    """
    standardised, prestandardised = _prestandardised_conv()
    layers = [m for m in model.modules() if type(m) is standardised]
    for layer in layers:
        weight = F.batch_norm(layer.weight.reshape(1, layer.out_channels, -1), None, None, training=True, momentum=0.0, eps=layer.eps)
        layer.weight.copy_(weight.reshape_as(layer.weight))
        layer.__class__ = prestandardised
    return len(layers)


class DPTDepthEstimator:
    """transformers `DPTForDepthEstimation` with its own image processor; fp16 on CUDA, fp32 on CPU.

    A torchvision-backed processor resizes on the model's device: in 8 bits on the CPU, in float on CUDA, so
    the two devices' inputs differ by up to one 8-bit level on smooth renders (benchmarks/results/bench-cuda.md).
    """

    def __init__(self, model: str = DEFAULT_DEPTH_MODEL, device: str | torch.device | None = None, compile: bool = False,
                 compile_mode: str = "default"):
        from transformers import AutoImageProcessor, DPTForDepthEstimation

        from hifa.hub import load_component

        self.model_name = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        what = "depth model"
        self.processor = load_component(AutoImageProcessor, model, None, what)
        self.model = load_component(DPTForDepthEstimation, model, None, what, dtype=self.dtype)
        self.model.to(self.device).eval().requires_grad_(False)
        prestandardise_weights(self.model)  # after the move: the same operation on the same device and dtype as per call
        self.on_device = takes_device_tensors(self.processor)
        if compile and self.device.type == "cuda":
            self.model.compile(mode=compile_mode)  # 'reduce-overhead': CUDA graphs (its output is resized at once, never kept)

    @torch.no_grad()
    def estimate(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """8-bit truncated input -> predicted relative disparity, resized bicubically to `size` (default input size)."""
        out_size = _target_size(images, size)
        quantised = (images.detach().float() * 255).to(torch.uint8)  # truncation, as the reference
        if self.on_device:  # no wait for the GPU and no copy to the host mid-step
            inputs = self.processor(images=list(quantised.to(self.device)), return_tensors="pt", device=self.device)
        else:
            inputs = self.processor(images=list(quantised.cpu()), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        predicted = self.model(pixel_values=pixels).predicted_depth.float()
        resized = F.interpolate(predicted[:, None], size=out_size, mode="bicubic", align_corners=False)
        return resized[:, 0].to(images.device)


class OracleDepthEstimator:
    """The oracle prior's ground-truth disparity of the step's last positive-view denoiser call (method.md §9)."""

    def __init__(self, prior):
        self.prior = prior

    @torch.no_grad()
    def estimate(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """prior.last_disparity (B, S, S) resized bilinearly to `size` (default the images' (H, W))."""
        out_size = _target_size(images, size)
        disparity = getattr(self.prior, "last_disparity", None)
        if disparity is None:
            raise HifaError(
                "the oracle depth estimator has no disparity yet: it needs a guidance call with a "
                "positive view first (compute the guidance loss before the depth loss)"
            )
        if disparity.shape[0] != images.shape[0]:
            raise HifaError(
                f"the oracle depth estimator holds disparity for {disparity.shape[0]} images but was asked for {images.shape[0]}"
            )
        resized = F.interpolate(disparity[:, None].float(), size=out_size, mode="bilinear", align_corners=False)
        return resized[:, 0].to(images.device)

    @torch.no_grad()
    def estimate_at(self, prompt: str, cameras, size: tuple[int, int]) -> torch.Tensor:
        """Evaluation: the ground-truth disparity (B, H, W) at the given cameras, no denoiser call needed."""
        return self.prior.disparity_at(prompt, cameras, int(size[0]), int(size[1]))
