"""Guidance identities of method.md §8.1-8.6, 8.12, 8.14 to float tolerance."""

import math

import pytest
import torch

from hifa.guidance import losses
from hifa.guidance.denoise import denoise
from hifa.guidance.schedules import (
    annealed_timestep,
    depth_weight_factor,
    ramp,
    sample_timesteps,
    stable_diffusion_alphas_cumprod,
    t_min_from_percent,
)
from hifa.guidance.views import guided_eps, perpendicular, perpneg_plan, view_prompt

ABAR = stable_diffusion_alphas_cumprod()


@pytest.mark.parametrize(
    "t,abar,s_over_a,a_times_s,one_minus",
    [
        (0, 0.999150, 0.0292, 0.0291, 0.0009),
        (20, 0.981314, 0.1380, 0.1354, 0.0187),
        (200, 0.753692, 0.5717, 0.4309, 0.2463),
        (250, 0.673793, 0.6958, 0.4688, 0.3262),
        (300, 0.590501, 0.8328, 0.4917, 0.4095),
        (500, 0.276333, 1.6183, 0.4472, 0.7237),
        (980, 0.005844, 13.0431, 0.0762, 0.9942),
    ],
)
def test_noise_schedule_values(t, abar, s_over_a, a_times_s, one_minus):
    a, s = math.sqrt(float(ABAR[t])), math.sqrt(1 - float(ABAR[t]))
    assert float(ABAR[t]) == pytest.approx(abar, rel=1e-5, abs=1e-6)
    assert s / a == pytest.approx(s_over_a, abs=1e-4)
    assert a * s == pytest.approx(a_times_s, abs=1e-4)
    assert 1 - float(ABAR[t]) == pytest.approx(one_minus, abs=1e-4)


@pytest.mark.parametrize(
    "t_min,expected",
    [(200, [972, 902, 733, 590, 428, 304, 200]), (300, [973, 912, 764, 640, 499, 391, 300])],
)
def test_sqrt_annealing_table(t_min, expected):
    steps = [1, 100, 1000, 2500, 5000, 7500, 10000]
    assert [annealed_timestep("sqrt", i, 10000, t_min) for i in steps] == expected


def test_linear_and_cosine_schedules():
    assert [annealed_timestep("linear", i, 10000, 200) for i in (2500, 5000, 7500)] == [785, 590, 395]
    assert [annealed_timestep("cosine", i, 10000, 200) for i in (2500, 5000, 7500)] == [865, 590, 314]


def test_annealing_is_monotone_and_halves_by_a_quarter():
    ts = [annealed_timestep("sqrt", i, 10000, 200) for i in range(1, 10001)]
    assert all(a >= b for a, b in zip(ts, ts[1:])) and ts[-1] == 200
    assert annealed_timestep("sqrt", 2500, 10000, 200) == (980 + 200) // 2


def test_random_and_uniform_timestep_ranges():
    gen = torch.Generator().manual_seed(0)
    random = torch.cat([sample_timesteps("random", 1, 10, 1, 200, generator=gen) for _ in range(3000)])
    uniform = sample_timesteps("uniform", 1, 10, 20000, 200, generator=gen)
    assert random.min() >= 20 and random.max() <= 979
    assert uniform.min() == 20 and uniform.max() == 980
    assert t_min_from_percent(0.2) == 200 and t_min_from_percent(0.3) == 300


def test_depth_anneal_matches_the_timestep_progress():
    for i in (1, 2500, 5000, 9999):
        t_cont = 200 + 780 * (1 - math.sqrt(i / 10000))
        assert depth_weight_factor(i, 10000) == pytest.approx((t_cont - 200) / 780)


def test_ramp_values():
    assert ramp(0, 100) == 0 and 3 * ramp(25, 100) == 1.5 and 3 * ramp(50, 100) == 3 and ramp(90, 100) == 1


def one_step_latent_grad(t, weighting="constant"):
    gen = torch.Generator().manual_seed(t)
    z = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    eps = torch.randn(z.shape, dtype=torch.float64, generator=gen)
    eps_hat = torch.randn(z.shape, dtype=torch.float64, generator=gen)  # a mock UNet's fixed answer
    tt = torch.tensor([t])
    alpha, sigma = (float(v) for v in losses.alpha_sigma(ABAR, tt))
    z_t = alpha * z.detach() + sigma * eps
    z_hat = denoise(lambda x, tau: eps_hat, z_t, t, ABAR, steps=1).z_hat
    weight = 0.05 * losses.hifa_weight_factor(ABAR, tt, weighting)
    losses.residual_loss(z, z_hat, weight).backward()
    return z.grad, eps_hat - eps, alpha, sigma


@pytest.mark.parametrize("t", [20, 300, 980])
def test_one_step_latent_residual_is_weighted_sds(t):
    grad, diff, alpha, sigma = one_step_latent_grad(t)
    assert torch.allclose(grad, 0.05 * (sigma / alpha) * diff, rtol=1e-6)


@pytest.mark.parametrize("weighting,factor", [("noisematch", lambda a, s: 1.0), ("sdslike", lambda a, s: s * s), ("strongerlower", lambda a, s: a)])
def test_weighting_variants(weighting, factor):
    grad, diff, alpha, sigma = one_step_latent_grad(500, weighting)
    assert torch.allclose(grad, 0.05 * factor(alpha, sigma) * diff, rtol=1e-6)


def test_hifa_weights_high_noise_far_more_than_sds():
    w = lambda t: math.sqrt((1 - float(ABAR[t])) / float(ABAR[t]))  # noqa: E731
    assert w(980) / w(300) == pytest.approx(15.66, abs=0.01)
    assert (1 - float(ABAR[980])) / (1 - float(ABAR[300])) == pytest.approx(2.43, abs=0.01)


def test_perfect_denoiser_gives_zero_latent_residual():
    z = torch.randn(1, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    eps = torch.randn_like(z)
    alpha, sigma = (float(v) for v in losses.alpha_sigma(ABAR, torch.tensor([400])))
    z_hat = denoise(lambda x, tau: eps, alpha * z.detach() + sigma * eps, 400, ABAR, steps=1).z_hat
    loss = losses.residual_loss(z, z_hat, 0.05)
    loss.backward()
    assert float(loss.detach()) < 1e-20 and z.grad.abs().max() < 1e-10


def test_target_trick_gradient_and_value():
    z = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(z)
    loss = losses.target_trick_loss(z, g)
    loss.backward()
    assert torch.allclose(z.grad, g / 3)
    assert float(loss.detach()) == pytest.approx(0.5 * float((g**2).sum()) / 3)


def test_sds_gradient_is_one_minus_abar_times_the_noise_residual():
    t = torch.tensor([300])
    z = torch.randn(1, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    eps, eps_hat = torch.randn_like(z), torch.randn_like(z)
    g = losses.sds_gradient(eps_hat, eps, losses.sds_weight(ABAR, t))
    losses.target_trick_loss(z, g).backward()
    assert torch.allclose(z.grad, (1 - ABAR[300]) * (eps_hat - eps))
    nan = losses.sds_gradient(torch.full_like(z, float("nan")), eps, losses.sds_weight(ABAR, t))
    assert torch.all(nan == 0)


@pytest.mark.parametrize("t,visited", [(980, [980, 730, 480, 230]), (500, [500, 250, 0]), (300, [300, 50]), (249, [249]), (750, [750, 500, 250, 0])])
def test_ddim_calls_and_visited_timesteps(t, visited):
    calls = []
    result = denoise(lambda x, tau: calls.append(tau) or torch.zeros_like(x), torch.zeros(1, 4, 2, 2), t, ABAR, steps=4)
    assert result.visited == visited == calls
    assert len(calls) == t // 250 + 1


def test_x0_mode_with_one_call_equals_one_step():
    gen = torch.Generator().manual_seed(1)
    z_t, eps = torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64), torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64)
    multi = denoise(lambda x, tau: eps, z_t, 200, ABAR, steps=4, mode="x0").z_hat
    single = denoise(lambda x, tau: eps, z_t, 200, ABAR, steps=1).z_hat
    assert torch.equal(multi, single)


def test_ddim_eta0_single_call_coefficients():
    z_t = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    eps = torch.randn_like(z_t)
    result = denoise(lambda x, tau: eps, z_t, 100, ABAR, steps=4, eta=0.0)
    x0 = (z_t - math.sqrt(1 - float(ABAR[100])) * eps) / math.sqrt(float(ABAR[100]))
    assert math.sqrt(float(ABAR[0])) == pytest.approx(0.999575, abs=1e-6)
    assert math.sqrt(1 - float(ABAR[0])) == pytest.approx(0.029155, abs=1e-6)
    assert torch.allclose(result.z_hat, math.sqrt(float(ABAR[0])) * x0 + math.sqrt(1 - float(ABAR[0])) * eps)


@pytest.mark.parametrize("tau,std", [(230, 0.02912), (50, 0.02891)])
def test_ddim_eta1_last_step_noise(tau, std):
    x0 = torch.zeros(1, 4, 64, 64, dtype=torch.float64)

    def true_x0(x, t):  # the eps that makes x0-hat exactly zero
        return x / math.sqrt(1 - float(ABAR[t]))

    # Start at tau with the last step's deterministic part removed: only the noise remains.
    z_t = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    result = denoise(true_x0, z_t, tau, ABAR, steps=4, eta=1.0, generator=torch.Generator().manual_seed(3))
    deterministic = math.sqrt(1 - float(ABAR[0]) - std**2) * true_x0(z_t, tau)
    noise = result.z_hat - deterministic
    assert float(noise.std()) == pytest.approx(std, rel=0.02)


def test_a_denoiser_returning_the_true_x0_makes_every_estimate_exact():
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=gen)
    seen = []

    def oracle(x, t):
        abar = float(ABAR[t])
        eps = (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
        seen.append((x - math.sqrt(1 - abar) * eps) / math.sqrt(abar))
        return eps

    z_t = math.sqrt(float(ABAR[980])) * x0 + math.sqrt(1 - float(ABAR[980])) * torch.randn(x0.shape, dtype=torch.float64, generator=gen)
    result = denoise(oracle, z_t, 980, ABAR, steps=4, generator=gen)
    assert len(seen) == 4 and all(torch.allclose(s, x0) for s in seen)
    assert torch.allclose(result.x0, x0)


@pytest.mark.parametrize(
    "azimuth,negatives,weights",
    [
        (0, ("front", "side"), (0, -2)),
        (30, ("front", "side"), (-0.52719, -0.07135)),
        (45, ("front", "side"), (-0.73576, -0.01348)),
        (-90, ("front", "side"), (-2, 0)),
        (90, ("side", "front"), (0, -2)),
        (135, ("side", "front"), (-0.00674, -2)),
        (180, ("side", "front"), (-1, -2)),
    ],
)
def test_perpneg_weight_table(azimuth, negatives, weights):
    plan = perpneg_plan(azimuth)
    assert plan.negatives == negatives
    assert plan.weights == pytest.approx(weights, abs=1e-5)
    (_, r), (_, r_rest) = plan.positive
    assert r + r_rest == pytest.approx(1.0)


def test_perpneg_positive_interpolation():
    assert perpneg_plan(45).positive == (("front", 0.5), ("side", 0.5))
    assert perpneg_plan(-135).positive == (("side", 0.5), ("back", 0.5))


def test_perpendicular_is_orthogonal():
    x, y = torch.randn(3, 4, 8, 8, dtype=torch.float64), torch.randn(3, 4, 8, 8, dtype=torch.float64)
    p = perpendicular(x, y)
    assert torch.allclose((p * y).sum((1, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10)


def test_perpneg_reduces_to_cfg_when_all_embeddings_are_equal():
    eps_u, eps_c = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    weights = torch.tensor([[-0.5, -2.0], [0.0, -1.0]])
    out = guided_eps(eps_u, eps_c, 100.0, [eps_c, eps_c], weights)
    assert torch.allclose(out, eps_u + 100.0 * (eps_c - eps_u), atol=1e-3)
    assert torch.allclose(guided_eps(eps_u, eps_c, 0.0), eps_u)


def test_view_prompts():
    assert view_prompt("a corgi", "front") == "a corgi, front view"
    assert view_prompt("a corgi", "overhead") == "a corgi, overhead view"


def test_residual_gains_count_the_reference_s_terms_in_its_units():
    from hifa.guidance.losses import residual_gains

    latent, image = residual_gains(64, 0.32)  # the oracle world's figures quoted in the README: 13.0 and 64
    assert round(latent, 2) == 13.02 and image == 64.0
    # A 512^2 image stands in for itself; unit-variance pixels differ from SD's latent only in count.
    latent, image = residual_gains(512, 1.0)
    assert math.isclose(latent, 4 * 64 * 64 / (3 * 512 * 512)) and image == 1.0
