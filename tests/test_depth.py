"""Depth supervision (method.md §5.1, oracle §8.7) and the depth estimators."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hifa.depth import DepthEstimator, DPTDepthEstimator, OracleDepthEstimator, pearson_depth_loss, ssi_depth_loss
from hifa.errors import HifaError
from hifa.guidance.oracle import OracleConfig, OraclePrior
from hifa.guidance.schedules import depth_weight_factor
from tests.host_reads import HostReads

ROOT = Path(__file__).resolve().parents[1]
D = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
Y = torch.tensor([2.0, 1.0, 4.0, 3.0, 6.0], dtype=torch.float64)
OPACITY = torch.tensor([1.0, 0.8, 0.9, 0.6, 0.95], dtype=torch.float64)


def as_render(d: torch.Tensor, opacity: torch.Tensor = OPACITY) -> tuple[torch.Tensor, torch.Tensor]:
    """The renderer's depth (Σ w z = O · planar depth) whose disparity O/depth is d; (1, n) images."""
    return (opacity / d)[None], opacity[None]


def loss_of(d, y=Y, opacity=OPACITY):
    depth, o = as_render(d, opacity)
    return ssi_depth_loss(depth, o, y[None])


def closed_form(d, y):
    n = d.numel()
    rho = torch.corrcoef(torch.stack([d, y]))[0, 1]
    return (n - 1) / n * (1 - rho**2)


def test_example_is_48_over_185_and_affine_invariant():
    assert loss_of(D).item() == pytest.approx(48 / 185, abs=1e-7)
    assert loss_of(2 * D + 1).item() == pytest.approx(48 / 185, abs=1e-7)
    assert loss_of(-3 * D + 7).item() == pytest.approx(48 / 185, abs=1e-7)
    assert float(torch.corrcoef(torch.stack([D, Y]))[0, 1] ** 2) == pytest.approx(25 / 37)


def test_weighted_depth_loss_at_step_zero():
    weight = 0.1 * depth_weight_factor(0, 10_000) * 0.05 * 256**2 * 0.5
    assert weight * loss_of(D).item() == pytest.approx(42.5098, abs=1e-4)


def test_matches_closed_form_on_random_data():
    g = torch.Generator().manual_seed(1)
    d = torch.rand(50, generator=g, dtype=torch.float64) + 0.2
    y = torch.rand(50, generator=g, dtype=torch.float64) * 30 + 0.5 * d
    assert loss_of(d, y, torch.ones(50, dtype=torch.float64)).item() == pytest.approx(closed_form(d, y).item(), rel=1e-10)


@pytest.mark.parametrize("a,b", [(0.37, 2.0), (-1.0, 0.0), (-5.5, 30.0), (1e3, -1.0)])
def test_invariant_to_any_affine_map_of_disparity(a, b):
    g = torch.Generator().manual_seed(2)
    d = torch.rand(40, generator=g, dtype=torch.float64) + 0.3
    y = torch.rand(40, generator=g, dtype=torch.float64)
    o = torch.ones(40, dtype=torch.float64)
    assert loss_of(a * d + b, y, o).item() == pytest.approx(loss_of(d, y, o).item(), rel=1e-9)


def test_zero_iff_disparity_is_affine_in_the_estimate():
    y = torch.tensor([0.3, 1.7, 2.2, 5.0, 0.9, 3.3], dtype=torch.float64)
    o = torch.ones(6, dtype=torch.float64)
    assert loss_of(-0.2 * y + 4.0, y, o).item() == pytest.approx(0.0, abs=1e-12)
    assert loss_of(0.5 * y + 0.1, y, o).item() == pytest.approx(0.0, abs=1e-12)
    bent = 0.5 * y + 0.1
    bent[2] += 1e-2
    assert loss_of(bent, y, o).item() > 1e-7


def test_gradient_is_orthogonal_to_ones_and_to_disparity():
    g = torch.Generator().manual_seed(3)
    d = (torch.rand(30, generator=g, dtype=torch.float64) + 0.25).requires_grad_(True)
    y = torch.rand(30, generator=g, dtype=torch.float64)
    o = torch.full((30,), 0.9, dtype=torch.float64)
    loss = loss_of(d, y, o)
    loss.backward()
    grad = d.grad
    assert grad.norm() > 1e-3
    assert abs(grad.sum().item()) < 1e-10 * grad.norm().item() * 30
    assert abs((grad * d.detach()).sum().item()) < 1e-10 * grad.norm().item() * d.norm().item()


def test_mask_excludes_low_opacity_pixels_and_blocks_their_gradient():
    depth = torch.tensor([[1.0, 1 / 2, 1 / 3, 7.0], [1 / 4, 1 / 5, 9.0, 0.1]], dtype=torch.float64, requires_grad=True)
    opacity = torch.tensor([[1.0, 1.0, 1.0, 0.5], [1.0, 1.0, 0.2, 0.49]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[2.0, 1.0, 4.0, 100.0], [3.0, 6.0, -50.0, 8.0]], dtype=torch.float64)
    loss = ssi_depth_loss(depth, opacity, y)
    assert loss.item() == pytest.approx(48 / 185, abs=1e-7)  # masked pixels are the §8.7 example
    loss.backward()
    outside = opacity.detach() <= 0.5
    assert torch.count_nonzero(depth.grad[outside]) == 0 and torch.count_nonzero(opacity.grad[outside]) == 0
    assert (depth.grad[~outside] != 0).all() and (opacity.grad[~outside] != 0).any()


def test_estimate_is_not_differentiated():
    y = Y.clone()[None].requires_grad_(True)
    depth, o = as_render(D)
    depth.requires_grad_(True)
    ssi_depth_loss(depth, o, y).backward()
    assert y.grad is None and depth.grad is not None


def test_fewer_than_two_masked_pixels_is_zero_with_a_gradient_path():
    depth = torch.tensor([[2.0, 3.0], [4.0, 5.0]], requires_grad=True)
    opacity = torch.tensor([[0.9, 0.1], [0.2, 0.3]])
    for fn in (ssi_depth_loss, pearson_depth_loss):
        loss = fn(depth, opacity, torch.rand(2, 2))
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.count_nonzero(depth.grad) == 0


def test_batch_averages_per_image_losses():
    g = torch.Generator().manual_seed(4)
    depth = torch.rand(3, 4, 5, generator=g) + 2.0
    opacity = torch.rand(3, 4, 5, generator=g)
    opacity[2] = 0.1  # an empty image contributes zero
    y = torch.rand(3, 4, 5, generator=g)
    per_image = [ssi_depth_loss(depth[b], opacity[b], y[b]) for b in range(3)]
    assert per_image[2].item() == 0.0 and per_image[0].item() > 0
    assert ssi_depth_loss(depth, opacity, y).item() == pytest.approx(sum(p.item() for p in per_image) / 3, rel=1e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(HifaError, match="depth, opacity and estimate"):
        ssi_depth_loss(torch.ones(4, 4), torch.ones(4, 4), torch.ones(1, 4, 4))


def test_pearson_variant():
    g = torch.Generator().manual_seed(5)
    z = torch.rand(20, generator=g, dtype=torch.float64) + 2.0  # planar depth
    o = torch.rand(20, generator=g, dtype=torch.float64) * 0.4 + 0.6
    y = torch.rand(20, generator=g, dtype=torch.float64) + 0.1
    expected = 1 - torch.corrcoef(torch.stack([z, 1 / y]))[0, 1]
    assert pearson_depth_loss((o * z)[None], o[None], y[None]).item() == pytest.approx(expected.item(), rel=1e-9)
    # depth proportional to the estimated depth 1/y: perfect correlation whatever the scale
    assert pearson_depth_loss((o * 3.0 / y)[None], o[None], y[None]).item() == pytest.approx(0.0, abs=1e-12)
    assert pearson_depth_loss((o * -3.0 / y)[None], o[None], y[None]).item() == pytest.approx(2.0, abs=1e-12)


def _indexed_reference(depth, opacity, y, kind):
    """The §5.1 losses written with boolean indexing, image by image (the form before masked sums)."""
    losses = []
    for d_img, o_img, y_img in zip(depth, opacity, y):
        mask = o_img.detach() > 0.5
        if int(mask.sum()) < 2:
            losses.append(d_img.sum() * 0.0)
            continue
        z, o, e = d_img[mask], o_img[mask], y_img[mask]
        if kind == "ssi":
            d = o / z
            e_hat = (e - e.mean()) / e.std(unbiased=True)
            p = d - d.mean()
            c = (p * e_hat).sum() / (p * p).sum()
            losses.append(((c * p - e_hat) ** 2).mean())
        else:
            a, b = z / o, 1.0 / e
            a, b = a - a.mean(), b - b.mean()
            losses.append(1.0 - (a * b).sum() / ((a * a).sum() * (b * b).sum()).sqrt())
    return torch.stack(losses).mean()


def _edge_batch(dtype=torch.float64):
    """Depth, opacity and estimate (4, 9, 11): two full images, one without and one with a single masked pixel."""
    g = torch.Generator().manual_seed(6)
    opacity = torch.rand(4, 9, 11, generator=g, dtype=dtype)
    opacity[1] = 0.2  # no masked pixel
    opacity[2] = 0.3
    opacity[2, 4, 5] = 0.9  # one masked pixel
    depth = opacity * (torch.rand(4, 9, 11, generator=g, dtype=dtype) + 2.0)
    depth[opacity < 0.5] = 0.0  # empty rays render depth 0: no 0/0 may leak from them
    return depth, opacity, torch.rand(4, 9, 11, generator=g, dtype=dtype) + 0.1


def _value_and_grads(loss_fn, depth, opacity):
    d, o = depth.clone().requires_grad_(True), opacity.clone().requires_grad_(True)
    loss = loss_fn(d, o)
    loss.backward()
    return loss.detach(), d.grad, o.grad


@pytest.mark.parametrize("kind,fn", [("ssi", ssi_depth_loss), ("pearson", pearson_depth_loss)])
def test_masked_sums_equal_boolean_indexing_in_value_and_gradient(kind, fn):
    depth, opacity, y = _edge_batch()
    loss, d_grad, o_grad = _value_and_grads(lambda d, o: fn(d, o, y), depth, opacity)
    ref, d_ref, o_ref = _value_and_grads(lambda d, o: _indexed_reference(d, o, y, kind), depth, opacity)
    assert ref > 0.01
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    assert torch.allclose(d_grad, d_ref, rtol=1e-10, atol=1e-14) and torch.allclose(o_grad, o_ref, rtol=1e-10, atol=1e-14)
    outside = opacity <= 0.5
    assert torch.isfinite(d_grad).all() and (d_grad[outside] == 0).all() and (o_grad[outside] == 0).all()
    assert d_grad[1].abs().max() == 0 and d_grad[2].abs().max() == 0  # images with fewer than 2 masked pixels


@pytest.mark.parametrize("fn", [ssi_depth_loss, pearson_depth_loss])
def test_compiled_depth_losses_match_eager_on_edge_images(fn):
    """renderer.compile runs the depth loss through torch.compile (inductor on the CPU): same values and gradients."""
    from hifa.compiled import compiled

    depth, opacity, y = _edge_batch(torch.float32)
    eager = _value_and_grads(lambda d, o: fn(d, o, y), depth, opacity)
    fused = _value_and_grads(lambda d, o: compiled(fn)(d, o, y), depth, opacity)
    for a, b in zip(fused, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    outside = opacity <= 0.5
    assert torch.isfinite(fused[1]).all() and (fused[1][outside] == 0).all() and (fused[2][outside] == 0).all()


def test_half_precision_inputs_give_a_finite_loss_and_gradient():
    depth, opacity, y = (t.half() for t in _edge_batch(torch.float32))
    loss, d_grad, _ = _value_and_grads(lambda d, o: ssi_depth_loss(d, o, y), depth, opacity)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(d_grad).all() and d_grad.dtype == torch.float16


@pytest.mark.parametrize("fn", [ssi_depth_loss, pearson_depth_loss])
def test_depth_losses_never_read_device_values_on_the_host(fn):
    g = torch.Generator().manual_seed(7)
    opacity = torch.rand(2, 8, 8, generator=g)
    depth = (opacity * 3.0).requires_grad_(True)
    with HostReads() as reads:
        fn(depth, opacity, torch.rand(2, 8, 8, generator=g)).backward()
    assert reads.ops == []  # on CUDA such a read would wait for the whole forward pass, diffusion networks included
    with HostReads() as reads:  # the recorder sees what it must
        _indexed_reference(depth, opacity, torch.rand(2, 8, 8), "ssi")
    assert "aten._local_scalar_dense.default" in reads.ops and "aten.index.Tensor[bool]" in reads.ops


# ---------------------------------------------------------------- estimators


def test_missing_depth_model_offline_is_one_clear_line(tmp_path):
    code = (
        "from hifa.depth import DPTDepthEstimator\n"
        "from hifa.errors import HifaError\n"
        "try:\n"
        "    DPTDepthEstimator('nobody/no-such-depth-model', device='cpu')\n"
        "except HifaError as e:\n"
        "    print(e)\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT))
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert "depth model 'nobody/no-such-depth-model' is not available offline" in lines[0] and "hf download" in lines[0]


@pytest.fixture(scope="module", params=["vit", "hybrid"])
def tiny_dpt(request, tmp_path_factory):
    """A tiny DPT of each layout: the plain ViT one, and the hybrid one of the default model (dpt-hybrid-midas)."""
    from tests.tinyworld import build_tiny_dpt

    return build_tiny_dpt(tmp_path_factory.mktemp("tiny-dpt"), hybrid=request.param == "hybrid")


def test_dpt_estimator_loads_a_saved_checkpoint_and_returns_input_resolution(tiny_dpt):
    estimator = DPTDepthEstimator(str(tiny_dpt), device="cpu")
    assert isinstance(estimator, DepthEstimator) and estimator.dtype == torch.float32
    images = torch.rand(2, 3, 20, 24)
    out = estimator.estimate(images)
    assert out.shape == (2, 20, 24) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert estimator.estimate(images, size=(10, 12)).shape == (2, 10, 12)


def test_dpt_estimator_feeds_8_bit_truncated_images(tiny_dpt):
    estimator = DPTDepthEstimator(str(tiny_dpt), device="cpu")
    seen = []
    real = estimator.processor

    def spy(images, **kwargs):
        seen.extend(images)
        return real(images=images, **kwargs)

    estimator.processor = spy
    images = torch.tensor([0.0, 0.999, 0.5, 1.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2).contiguous()
    estimator.estimate(images)
    assert seen[0].dtype == torch.uint8
    assert seen[0][0].flatten().tolist() == [0, 254, 127, 255]  # truncation, not rounding


def test_oracle_estimator_requires_a_guidance_call_first(tmp_path):
    prior = OraclePrior(OracleConfig(resolution=16, views=24, uncond_views_per_scene=6, cache_dir=str(tmp_path)))
    estimator = OracleDepthEstimator(prior)
    with pytest.raises(HifaError, match="guidance call"):
        estimator.estimate(torch.rand(1, 3, 8, 8))


def test_oracle_estimator_resizes_the_last_disparity_bilinearly(tmp_path):
    prior = OraclePrior(OracleConfig(resolution=16, views=24, uncond_views_per_scene=6, cache_dir=str(tmp_path)))
    prior.last_disparity = torch.rand(2, 16, 16)
    estimator = OracleDepthEstimator(prior)
    assert isinstance(estimator, DepthEstimator)
    out = estimator.estimate(torch.rand(2, 3, 32, 32))
    expected = F.interpolate(prior.last_disparity[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert out.shape == (2, 32, 32) and torch.allclose(out, expected)
    assert torch.equal(estimator.estimate(torch.rand(2, 3, 16, 16)), prior.last_disparity)
    with pytest.raises(HifaError, match="2 images"):
        estimator.estimate(torch.rand(1, 3, 16, 16))


def test_dpt_estimator_preprocesses_on_the_device_with_a_torchvision_processor_and_on_the_host_with_a_pil_one(tiny_dpt):
    """transformers' torchvision processor takes device tensors (no host copy mid-step); a PIL one gets CPU images."""
    from transformers import DPTImageProcessor
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    estimator = DPTDepthEstimator(str(tiny_dpt), device="cpu")
    assert isinstance(estimator.processor, DPTImageProcessor) and estimator.on_device
    images = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    on_device = estimator.estimate(images)
    estimator.processor = DPTImageProcessorPil(size={"height": 32, "width": 32})
    estimator.on_device = False
    on_host = estimator.estimate(images)
    # Two resize implementations (torchvision's and PIL's bicubic) of the same 8-bit image: the same depth to rounding.
    assert on_host.shape == on_device.shape == (1, 40, 40)
    assert torch.allclose(on_host, on_device, atol=2e-2 * float(on_device.abs().max()))


def test_hybrid_dpt_weights_are_standardised_once_with_the_same_output(tmp_path):
    """DPT-hybrid's BiT convolutions standardise their weights at every call; the estimator does it once at load
    (the model is frozen): the same depth, bit for bit, and no batch norm over weights left in a call."""
    from transformers import DPTForDepthEstimation
    from transformers.models.bit.modeling_bit import WeightStandardizedConv2d

    from hifa.depth import prestandardise_weights
    from tests.tinyworld import build_tiny_dpt

    folder = build_tiny_dpt(tmp_path / "dpt", hybrid=True)
    reference = DPTForDepthEstimation.from_pretrained(folder).eval()
    layers = sum(isinstance(m, WeightStandardizedConv2d) for m in reference.modules())
    assert layers > 0
    estimator = DPTDepthEstimator(str(folder), device="cpu")
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as before:
        expected = reference(pixel_values=pixels).predicted_depth
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as after:
        out = estimator.model(pixel_values=pixels).predicted_depth
    assert torch.equal(out, expected)  # the same weights, computed by the same operation: bit for bit
    norms = lambda prof: sum(e.name == "aten::batch_norm" for e in prof.events())  # noqa: E731
    assert norms(before) == layers and norms(after) == 0
    assert prestandardise_weights(estimator.model) == 0  # already done: a second pass changes nothing
