"""Audit: the oracle's exact posterior, view priors, canonical views, bank renders and config checks by hand."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hifa.cameras import orbit_cameras
from hifa.errors import HifaError
from hifa.guidance.oracle import OracleConfig, OraclePrior, bank_key, eps_from_x0, exact_x0, render_bank
from hifa.guidance.oracle_views import angle_log_prior
from hifa.scenes import Part, Scene, get_scene, shapes


def test_posterior_mean_matches_the_gaussian_mixture_by_hand():
    rng = np.random.default_rng(0)
    bank = rng.uniform(0, 1, (3, 3, 2, 2))
    x_t = rng.normal(0, 1, (2, 3, 2, 2))
    abar = np.array([0.5, 0.9])
    prior = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    x0, weights = exact_x0(torch.from_numpy(x_t), torch.from_numpy(abar), torch.from_numpy(bank), torch.from_numpy(np.log(prior)))
    for b in range(2):
        # p(x_t | x_k) = N(sqrt(abar) x_k, (1 - abar) I): log-likelihood -|x_t - sqrt(abar) x_k|^2 / (2 (1 - abar))
        ll = np.array([-np.sum((x_t[b] - math.sqrt(abar[b]) * bank[k]) ** 2) / (2 * (1 - abar[b])) for k in range(3)])
        post = prior[b] * np.exp(ll - ll.max())
        post /= post.sum()
        assert np.allclose(weights[b].numpy(), post, rtol=1e-10, atol=1e-14)
        assert np.allclose(x0[b].numpy(), np.tensordot(post, bank, axes=1), rtol=1e-10)
        eps = eps_from_x0(torch.from_numpy(x_t[b : b + 1]), x0[b : b + 1], torch.from_numpy(abar[b : b + 1]))
        expected = (x_t[b] - math.sqrt(abar[b]) * np.tensordot(post, bank, axes=1)) / math.sqrt(1 - abar[b])
        assert np.allclose(eps[0].numpy(), expected, rtol=1e-9)


def test_angle_prior_values_for_unnormalised_views_and_a_cutoff_on_its_boundary():
    dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.6, 0.8]], dtype=torch.float64)
    view = torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64)  # length 3: only its direction counts
    tau = math.radians(10.0)
    angles = np.array([0.0, math.pi / 2, math.pi / 2, math.acos(0.8)])
    lp = angle_log_prior(view, dirs, tau)
    assert np.allclose(lp[0].numpy(), -(angles**2) / (2 * tau**2), rtol=1e-12)
    # "beyond the cut-off": an angle equal to it stays.
    cut = angle_log_prior(view, dirs, tau, math.pi / 2)
    assert torch.isfinite(cut).all()
    cut = angle_log_prior(view, dirs, tau, math.radians(40.0))
    assert torch.isfinite(cut[0]).tolist() == [True, False, False, True]


@pytest.fixture(scope="module")
def canonical():
    return OraclePrior(OracleConfig(resolution=8, views=4, uncond_views_per_scene=1, suffix_views="canonical"), [get_scene("green-torus")])


def unit(polar, azimuth):
    t, p = math.radians(polar), math.radians(azimuth)
    return torch.tensor([math.sin(t) * math.sin(p), math.cos(t), math.sin(t) * math.cos(p)])


@pytest.mark.parametrize("azimuth,side_azimuth", [(40.0, 90.0), (-40.0, -90.0)])
def test_canonical_perpneg_negatives_are_the_front_and_the_camera_s_own_side(canonical, azimuth, side_azimuth):
    cams = orbit_cameras(1, polar_deg=70.0, radius=3.2, fovy_deg=20.0, start_azimuth_deg=azimuth)
    negatives = canonical.conditions("a green torus", cams, "perpneg").negatives
    assert torch.allclose(negatives[0].directions[0], unit(70.0, 0.0), atol=1e-6)
    assert torch.allclose(negatives[1].directions[0], unit(70.0, side_azimuth), atol=1e-6)


@pytest.mark.parametrize("polar,azimuth,expected", [(20.0, 45.0, (0.0, 0.0)), (70.0, 100.0, (70.0, 90.0)), (70.0, 170.0, (70.0, 180.0))])
def test_canonical_suffix_views_are_the_label_centres(canonical, polar, azimuth, expected):
    cams = orbit_cameras(1, polar_deg=polar, radius=3.2, fovy_deg=20.0, start_azimuth_deg=azimuth)
    positive = canonical.conditions("a green torus", cams, "suffix").positive
    assert torch.allclose(positive.directions[0], unit(*expected), atol=1e-6)  # overhead: straight above, (0, 1, 0)


def test_cameras_with_another_field_of_view_are_refused(canonical):
    with pytest.raises(HifaError, match="fovy"):
        canonical.conditions("a green torus", orbit_cameras(1, radius=3.2, fovy_deg=30.0), "none")


def test_bank_directions_are_unit_and_disparity_is_one_over_planar_depth():
    radius = 0.4
    scene = Scene("ball", "a ball", [Part(shapes.sphere(radius, resolution=200), (0.2, 0.4, 0.6))])
    bank = render_bank(scene, OracleConfig(resolution=9, views=4, uncond_views_per_scene=1))
    assert torch.allclose(bank.directions.norm(dim=-1), torch.ones(4), atol=1e-6)
    assert torch.allclose(bank.directions[:, 1], torch.tensor([0.75, 0.25, -0.25, -0.75]), atol=1e-6)  # Fibonacci polar
    # The centre pixel of a 9x9 view sees the ball's nearest point at planar depth 3.2 - r.
    assert torch.allclose(bank.disparity[:, 4, 4], torch.full((4,), 1 / (3.2 - radius)), atol=2e-4)
    assert torch.all(bank.disparity[:, 0, 0] == 0) and torch.all(bank.images[:, :, 0, 0] == 1)
    assert torch.allclose(bank.images[:, :, 4, 4], torch.tensor([0.2, 0.4, 0.6]).expand(4, 3), atol=1e-5)


def test_bank_key_changes_with_every_render_setting():
    scene = get_scene("green-torus")
    base = OracleConfig(resolution=8, views=4, uncond_views_per_scene=1)
    keys = {bank_key(scene, c) for c in (base, replace(base, radius=3.0), replace(base, fovy_deg=25.0), replace(base, views=5), replace(base, resolution=16))}
    assert len(keys) == 5


@pytest.mark.parametrize(
    "kwargs,key",
    [({"tau_deg": 0.0}, "oracle.tau_deg"), ({"view_cutoff_deg": 0.0}, "oracle.view_cutoff_deg"), ({"radius": 1.0}, "oracle.radius"),
     ({"fovy_deg": 180.0}, "oracle.fovy_deg"), ({"resolution": 4}, "oracle.resolution"), ({"uncond_views_per_scene": 500}, "oracle.uncond_views_per_scene")],
)
def test_bad_oracle_config_names_the_key(kwargs, key):
    with pytest.raises(HifaError, match=key):
        OracleConfig(**kwargs)
