"""Guidance equations of method.md §4 through Guidance.loss: noising, s_res, resize, CFG/Perp-Neg, eta (each test kills a bug the rest of the suite let through)."""

import math

import pytest
import torch

from hifa.cameras import orbit_cameras
from hifa.guidance import losses
from hifa.guidance.denoise import denoise
from hifa.guidance.guidance import Guidance, GuidanceConfig, to_prior_size
from hifa.guidance.prior import Conditioning
from hifa.guidance.schedules import annealed_timestep, sample_timesteps, stable_diffusion_alphas_cumprod
from hifa.guidance.views import guided_eps, perpneg_plan

ABAR = stable_diffusion_alphas_cumprod()


class FixedEpsPrior:
    """Identity VAE; the UNet answers a fixed eps-hat for every handle and records the noisy latents it is shown."""

    alphas_cumprod, residual_gains = ABAR, (1.0, 1.0)

    def __init__(self, eps_hat: torch.Tensor, image_size: int = 16):
        self.eps_hat, self.image_size, self.seen = eps_hat, image_size, []

    def encode(self, x, generator=None):
        return x

    def decode(self, z):
        return z.detach().clamp(0, 1)

    def conditions(self, prompt, cameras, view_mode):
        return Conditioning("u", "c", [], None)

    def predict_eps(self, latents, t, handles):
        self.seen.append((latents.clone(), t.clone()))
        return [self.eps_hat.expand_as(latents).clone() for _ in handles]


def _run(method, render, eps_hat, **config):
    prior = FixedEpsPrior(eps_hat)
    cfg = GuidanceConfig(method=method, view_mode="none", schedule="uniform" if method == "sds" else "sqrt", **config)
    out = Guidance(prior, cfg).loss(render, "x", orbit_cameras(render.shape[0]), 10, 100, torch.Generator().manual_seed(5))
    sum(out.terms.values()).backward()
    return out, prior


def test_sds_step_pushes_along_w_t_times_eps_hat_minus_the_true_noise():
    """§4.2: z_t = alpha z + sigma eps reaches the UNet and dL/dz = (1 - abar_t)(eps_hat - eps)/B."""
    gen = torch.Generator().manual_seed(0)
    render = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=gen).requires_grad_(True)
    eps_hat = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=gen)
    out, prior = _run("sds", render, eps_hat)
    (z_t, t_seen), = prior.seen
    t = out.t.long()
    assert torch.equal(t_seen.cpu(), t)
    abar = ABAR[t].view(-1, 1, 1, 1)
    eps = (z_t - abar.sqrt() * render.detach()) / (1 - abar).sqrt()  # the noise the step drew
    assert float(eps.std()) == pytest.approx(1.0, abs=0.1)  # unit-variance noise, not a scaled render
    expected = (1 - abar) * (eps_hat - eps) / 2
    assert torch.allclose(render.grad, expected, atol=1e-10)


def test_hifa_one_step_gradient_is_sigma_over_alpha_weighted_sds():
    """§8.2 through Guidance.loss: K = 1, image term off => dL/dz = 0.05 s_res (sigma/alpha)(eps_hat - eps)."""
    gen = torch.Generator().manual_seed(1)
    render = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=gen).requires_grad_(True)
    eps_hat = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=gen)
    out, prior = _run("hifa", render, eps_hat, denoising_steps=1, lambda_rgb=0.0)
    (z_t, _), = prior.seen
    t = int(out.t[0])
    assert t == annealed_timestep("sqrt", 10, 100, 200)
    alpha, sigma = math.sqrt(float(ABAR[t])), math.sqrt(1 - float(ABAR[t]))
    eps = (z_t - alpha * render.detach()) / sigma
    assert float(eps.std()) == pytest.approx(1.0, abs=0.1)
    assert torch.allclose(render.grad, 0.05 * (sigma / alpha) * (eps_hat - eps), atol=1e-10)


def test_hifa_resolution_scale_uses_the_render_size_not_the_resized_input():
    """§4.3: s_res = h w / 512^2 of the render (a 8x8 render for a 16-pixel prior: 1/4)."""
    render = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    out, _ = _run("hifa", render, torch.zeros(1, 3, 16, 16, dtype=torch.float64), denoising_steps=1)
    assert float(out.weight) == pytest.approx(0.05 * 0.25)


def test_resolution_scale_values():
    """s_res = h w / size^2: 1 at 512^2, 1/4 at 256^2, 1/64 at 64^2, 1/8 at 256x128."""
    assert losses.resolution_scale(512, 512, 512) == 1.0
    assert losses.resolution_scale(256, 256, 512) == 0.25
    assert losses.resolution_scale(64, 64, 512) == 1 / 64
    assert losses.resolution_scale(256, 128, 512) == 1 / 8


def test_resize_to_the_prior_is_bilinear_without_aligned_corners():
    """§1.2: x_512 is a bilinear resize with align_corners false (hand values for 2 -> 4 columns)."""
    images = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64).expand(1, 3, 2, 2)
    resized = to_prior_size(images, 4)
    assert resized[0, 0, 0].tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])
    assert to_prior_size(images, 2) is images


def test_residual_loss_stops_the_gradient_at_the_target():
    """§4.3: L = w/2 sum (x - sg(target))^2: no gradient reaches the target, dL/dx = w (x - target)."""
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    loss = losses.residual_loss(x, target, 0.3)
    loss.backward()
    assert target.grad is None
    assert torch.allclose(x.grad, 0.3 * (x - target).detach())
    assert float(loss.detach()) == pytest.approx(0.15 * float(((x - target).detach() ** 2).sum()))


@pytest.mark.parametrize("kind", ["sqrt", "linear", "cosine"])
def test_annealing_stays_at_t_min_past_the_last_step_and_at_t_max_before_the_first(kind):
    """§4.6: progress is clamped to [0, 1], so t(i > N) = t_min and t(i <= 0) = t_max."""
    assert annealed_timestep(kind, 12_000, 10_000, 200) == 200
    assert annealed_timestep(kind, 40_000, 10_000, 200) == 200
    assert annealed_timestep(kind, -5, 10_000, 200) == 980
    assert sample_timesteps(kind, 15_000, 10_000, 2, 300).tolist() == [300, 300]


@pytest.mark.parametrize("eta", [0.5, 0.25])
def test_ddim_last_step_noise_scales_with_eta(eta):
    """§4.5: sigma_eta^2 = eta^2 (1 - abar')/(1 - abar_tau)(1 - abar_tau/abar'), so its std is eta * 0.02912 at tau = 230."""
    abar_t, abar_0 = float(ABAR[230]), float(ABAR[0])
    var = eta**2 * (1 - abar_0) / (1 - abar_t) * (1 - abar_t / abar_0)
    assert math.sqrt(var) == pytest.approx(eta * 0.02912, rel=1e-3)

    def x0_is_zero(x, t):
        return x / math.sqrt(1 - float(ABAR[t]))

    z_t = torch.randn(1, 4, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    result = denoise(x0_is_zero, z_t, 230, ABAR, steps=4, eta=eta, generator=torch.Generator().manual_seed(3))
    noise = result.z_hat - math.sqrt(1 - abar_0 - var) * x0_is_zero(z_t, 230)
    assert float(noise.std()) == pytest.approx(math.sqrt(var), rel=0.03)


def test_perpneg_guidance_on_a_hand_example():
    """§4.7: eps = eps_u + s[D0 + w perp(D1, D0)]; D0 = (1,0), D1 = (1,1), w = -2 => (1, -2)."""
    eps_u = torch.zeros(1, 2, dtype=torch.float64)
    eps_c = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    eps_n = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    out = guided_eps(eps_u, eps_c, 1.0, [eps_n], torch.tensor([[-2.0]]))
    assert out[0].tolist() == pytest.approx([1.0, -2.0])
    out = guided_eps(eps_u + 1, eps_c + 1, 10.0, [eps_n + 1], torch.tensor([[-0.5]]))
    assert out[0].tolist() == pytest.approx([11.0, -4.0])
    # |w| <= 1e-4 is skipped, a larger one of either sign is not
    assert guided_eps(eps_u, eps_c, 1.0, [eps_n], torch.tensor([[-5e-5]]))[0].tolist() == pytest.approx([1.0, 0.0])
    assert guided_eps(eps_u, eps_c, 1.0, [eps_n], torch.tensor([[3.0]]))[0].tolist() == pytest.approx([1.0, 3.0])


def _perpneg_reference(eps_u, eps_pos, negs, weights, scale):
    """Straightforward per-item Perp-Neg of §4.7 on flattened tensors."""
    out = []
    for b in range(eps_u.shape[0]):
        u, d0 = eps_u[b].flatten(), (eps_pos[b] - eps_u[b]).flatten()
        total = d0.clone()
        for j, neg in enumerate(negs):
            w = float(weights[b, j])
            if abs(w) <= 1e-4:
                continue
            dj = (neg[b] - eps_u[b]).flatten()
            total += w * (dj - torch.dot(dj, d0) / max(float(torch.dot(d0, d0)), 1e-6) * d0)
        out.append((u + scale * total).view_as(eps_u[b]))
    return torch.stack(out)


def test_perpneg_guidance_matches_a_straightforward_implementation():
    """Random batch with two negatives and per-item weights (signs, a skipped one) against the reference loop."""
    gen = torch.Generator().manual_seed(9)
    eps_u, eps_c, n1, n2 = (torch.randn(3, 4, 5, 5, dtype=torch.float64, generator=gen) for _ in range(4))
    weights = torch.tensor([[-2.0, -0.07], [0.0, -2.0], [-0.5, 5e-5]])
    out = guided_eps(eps_u, eps_c, 7.5, [n1, n2], weights)
    assert torch.allclose(out, _perpneg_reference(eps_u, eps_c, [n1, n2], weights, 7.5), atol=1e-10)


def test_perpneg_weight_thresholds_are_strict():
    """§4.7: w = 0 only if r > 0.8 (r = 0.8 exactly at |a| = 18 and 108 keeps the exponential)."""
    assert perpneg_plan(108).weights == pytest.approx((-math.exp(-8.0), -2.0), rel=1e-9)
    assert perpneg_plan(-108).weights == pytest.approx((-math.exp(-8.0), -2.0), rel=1e-9)
    assert perpneg_plan(18).weights == pytest.approx((-2 * math.exp(-1.6), -2 * math.exp(-2.0)), rel=1e-9)
