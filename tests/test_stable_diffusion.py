"""The Stable Diffusion prior through the real loaders, on a tiny random checkpoint, offline on CPU."""

import subprocess
import sys

import pytest
import torch

from hifa.cameras import orbit_cameras
from hifa.errors import HifaError
from hifa.guidance.guidance import Guidance, GuidanceConfig
from hifa.guidance.schedules import stable_diffusion_alphas_cumprod
from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior
from tests.tinyworld import build_tiny_stable_diffusion


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def prior(tiny_sd):
    return StableDiffusionPrior(StableDiffusionConfig(model=str(tiny_sd)))


def test_tiny_checkpoint_loads_with_real_sizes(prior):
    assert prior.image_size == 32 and prior.vae_factor == 2 and prior.residual_gains == (1.0, 1.0)
    assert prior.prediction_type == "epsilon"
    assert torch.allclose(prior.alphas_cumprod, stable_diffusion_alphas_cumprod(), rtol=1e-5)
    assert prior.scaling_factor == pytest.approx(0.18215)


def test_embeddings_are_cached_per_text(prior):
    a = prior.embed("a corgi, front view")
    assert prior.embed("a corgi, front view") is a
    assert not torch.equal(a, prior.embed("a corgi, back view"))


@pytest.mark.parametrize("method,view_mode,schedule", [("hifa", "perpneg", "sqrt"), ("sds", "suffix", "uniform")])
def test_guidance_step_backpropagates_through_the_real_loader(prior, method, view_mode, schedule):
    render = torch.rand(1, 3, 16, 16, requires_grad=True)
    config = GuidanceConfig(method=method, view_mode=view_mode, schedule=schedule)
    cams = orbit_cameras(1, start_azimuth_deg=40.0)
    out = Guidance(prior, config).loss(render, "a corgi", cams, step=5, total_steps=100, generator=torch.Generator().manual_seed(0))
    sum(out.terms.values()).backward()
    assert torch.isfinite(render.grad).all() and render.grad.abs().sum() > 0
    if method == "hifa":
        assert out.x_hat.shape == (1, 3, 32, 32)


def test_perpneg_conditioning_shapes(prior):
    cond = prior.conditions("a corgi", orbit_cameras(3), "perpneg")
    assert cond.positive.shape == (3, 77, 32) and len(cond.negatives) == 2 and cond.weights.shape == (3, 2)


def test_v_prediction_is_converted_to_epsilon(tmp_path):
    prior = StableDiffusionPrior(StableDiffusionConfig(model=str(build_tiny_stable_diffusion(tmp_path, "v_prediction"))))
    z = torch.randn(1, 4, 16, 16)
    t = torch.tensor([400])
    handle = prior.embed("x")
    v = prior.unet(z, t, encoder_hidden_states=handle).sample
    abar = prior.alphas_cumprod[400].float()
    expected = abar.sqrt() * v + (1 - abar).sqrt() * z
    assert torch.allclose(prior.predict_eps(z, t, [handle])[0], expected, atol=1e-5)


def test_v_prediction_in_float16_converts_with_the_full_precision_latents(tmp_path):
    """eps = alpha v + sigma z_t must use the z_t the denoiser divides back out (fp32), not its fp16 copy."""
    prior = StableDiffusionPrior(StableDiffusionConfig(model=str(build_tiny_stable_diffusion(tmp_path, "v_prediction")), precision="float16"))
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900])
    handle = prior.embed("x")
    v = prior.unet(z.half(), t, encoder_hidden_states=handle.half()).sample.float()
    abar = prior.alphas_cumprod[900].float()
    expected = abar.sqrt() * v + (1 - abar).sqrt() * z
    assert (z.half().float() - z).abs().max() > 1e-4  # the fp16 copy is measurably off
    assert torch.allclose(prior.predict_eps(z, t, [handle])[0], expected, atol=1e-6)


def test_the_vae_posterior_draws_from_the_run_s_generator(prior):
    """Not from the global RNG (on CUDA a resumed run would restart that stream)."""
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    a = prior.encode(x, torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    b = prior.encode(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, prior.encode(x, torch.Generator().manual_seed(8)))


def test_the_vae_s_plain_attention_encodes_decodes_and_backpropagates_as_the_fused_one(tiny_sd, prior):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    plain = StableDiffusionPrior(StableDiffusionConfig(model=str(tiny_sd), vae_attention="math"))
    processors = plain.vae.attn_processors
    assert processors and all(isinstance(p, AttnProcessor) for p in processors.values())  # the tiny VAE has its mid-block attention
    assert all(isinstance(p, AttnProcessor2_0) for p in prior.vae.attn_processors.values())
    images = torch.rand(2, 3, prior.image_size, prior.image_size, generator=torch.Generator().manual_seed(0))
    results = []
    for model in (prior, plain):
        x = images.clone().requires_grad_(True)
        z = model.encode(x, torch.Generator().manual_seed(1))
        (z * torch.linspace(-1, 1, z.numel()).view_as(z)).sum().backward()
        results.append((z.detach(), x.grad, model.decode(z.detach())))
    for fused, math in zip(*results):
        assert fused.abs().max() > 0
        torch.testing.assert_close(math, fused, atol=1e-5, rtol=1e-4)


def test_an_unknown_vae_attention_is_a_clear_error():
    with pytest.raises(HifaError, match="prior.vae_attention"):
        StableDiffusionConfig(vae_attention="flash")


def test_missing_model_offline_is_one_clear_line(tmp_path):
    code = (
        "from hifa.guidance.stable_diffusion import StableDiffusionPrior, StableDiffusionConfig\n"
        "from hifa.cli import main\n"
        "from hifa.errors import HifaError\n"
        "try:\n"
        "    StableDiffusionPrior(StableDiffusionConfig(model='nobody/no-such-model'))\n"
        "except HifaError as e:\n"
        "    print(e)\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert "'nobody/no-such-model' is not available offline" in lines[0] and "hf download" in lines[0] and "HF_HOME" in lines[0]


def test_empty_prompt_is_a_clear_error(prior):
    with pytest.raises(HifaError, match="prompt is empty"):
        prior.conditions("  ", orbit_cameras(1), "none")
