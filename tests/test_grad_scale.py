"""Gradient scaling across the fp16 VAE encoder: accuracy against fp32, overflow back-off, growth, state."""

from unittest.mock import patch

import pytest
import torch

from hifa.guidance.grad_scale import GradientScale, scaled_section
from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior
from tests.tinyworld import build_tiny_stable_diffusion


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"))


def input_gradient(prior, images, upstream, scaled=True):
    x = images.clone().requires_grad_(True)
    if not scaled:
        prior.grad_scale.scale = 1.0
    z = prior.encode(x, torch.Generator().manual_seed(3))
    (z * upstream).sum().backward()
    return x.grad


@pytest.mark.parametrize("magnitude", [1e-3, 1e-4])
def test_fp16_encoder_gradients_match_fp32_when_scaled(tiny_sd, magnitude):
    """HiFA's latent gradients are ~1e-3 late in a run: unscaled fp16 loses them to rounding and underflow."""
    exact = StableDiffusionPrior(StableDiffusionConfig(model=str(tiny_sd), precision="float32"))
    half = StableDiffusionPrior(StableDiffusionConfig(model=str(tiny_sd), precision="float16"))
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    upstream = magnitude * torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    truth = input_gradient(exact, images, upstream)
    scaled = input_gradient(half, images, upstream)
    plain = input_gradient(StableDiffusionPrior(StableDiffusionConfig(model=str(tiny_sd), precision="float16")), images, upstream, scaled=False)
    error = lambda g: float((g - truth).norm() / truth.norm())  # noqa: E731
    assert scaled.dtype == torch.float32 and error(scaled) < 0.01, error(scaled)
    assert error(plain) > 2 * error(scaled), (error(plain), error(scaled))
    assert half.grad_scale.overflows == 0 and half.grad_scale.good_steps == 1


def test_an_overflow_drops_the_section_s_gradient_and_backs_off():
    scaler = GradientScale(scale=2.0**16)
    x = torch.ones(4, requires_grad=True)
    huge = lambda t: (t.half() * 60000).float()  # noqa: E731 - x 65536 more overflows fp16 on the way back
    scaled_section(huge, x, scaler).sum().backward()
    assert torch.equal(x.grad, torch.zeros(4)) and scaler.scale == 2.0**15 and scaler.overflows == 1
    x.grad = None
    scaler.scale = 1.0
    scaled_section(huge, x, scaler).sum().backward()
    assert torch.equal(x.grad, torch.full((4,), 60000.0)) and scaler.good_steps == 1  # the exact gradient once it fits


def test_the_scale_grows_after_clean_steps_and_round_trips_through_state():
    clean, overflow = torch.tensor(True), torch.tensor(False)
    scaler = GradientScale(scale=8.0, growth_interval=3)
    for _ in range(3):
        scaler.record(clean)
    assert scaler.scale == 16.0 and scaler.good_steps == 0
    scaler.record(overflow)
    restored = GradientScale()
    restored.load(scaler.state())
    assert (restored.scale, restored.good_steps, restored.overflows) == (8.0, 0, 1)
    floor = GradientScale(scale=1.0)
    floor.record(overflow)
    assert floor.scale == 1.0  # never below 1


def test_without_gradients_the_section_runs_as_it_is():
    scaler = GradientScale()
    with torch.no_grad():
        assert torch.equal(scaled_section(lambda t: t * 2, torch.ones(2), scaler), torch.full((2,), 2.0))
    assert scaler.good_steps == 0


def test_the_backward_reads_nothing_on_the_host_and_the_next_forward_uses_the_updated_scale():
    """No host wait in the backward: S and the counters are updated by device ops, read only when asked for."""
    from tests.host_reads import HostReads

    scaler = GradientScale(scale=2.0**16)
    to_half = lambda t: t.half().float()  # noqa: E731 - 2^16 is beyond fp16's range, 2^15 is not
    grads = []
    for _ in range(2):
        x = torch.ones(4, requires_grad=True)
        # No value read (HostReads), and the state never copied to the host (`_read`, which `.tolist()`s it).
        with HostReads() as reads, patch.object(GradientScale, "_read", side_effect=AssertionError("S read on the host")):
            scaled_section(to_half, x, scaler).sum().backward()
        assert reads.ops == [], reads.ops
        grads.append(x.grad)
    # The first step overflowed (its gradient dropped, S halved); the second ran at the new S without reading it.
    assert torch.equal(grads[0], torch.zeros(4)) and torch.equal(grads[1], torch.ones(4))
    assert scaler.state() == {"scale": 2.0**15, "good_steps": 1, "overflows": 1}
    scaler.load({"scale": 4.0, "good_steps": 0, "overflows": 0})
    assert scaler.scale == 4.0 and scaler.state() == {"scale": 4.0, "good_steps": 0, "overflows": 0}


def test_a_forward_keeps_its_scale_when_the_scale_changes_before_its_backward():
    """Two sections in flight: each backward scales by the S its forward saw, whatever S has become since."""
    scaler = GradientScale(scale=2.0**16)
    x1, x2 = torch.ones(4, requires_grad=True), torch.ones(4, requires_grad=True)
    huge = lambda t: (t.half() * 60000).float()  # noqa: E731
    first = scaled_section(huge, x1, scaler)  # runs at 2^16
    scaled_section(huge, x2, scaler).sum().backward()  # overflows: S drops to 2^15
    scaler.scale = 1.0
    first.sum().backward()  # still scaled by 2^16 on the way in, divided by it on the way out: overflows too
    assert torch.equal(x1.grad, torch.zeros(4)) and scaler.overflows == 2 and scaler.scale == 1.0
