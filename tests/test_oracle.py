"""The oracle prior's exact denoiser, its conditioning, and guidance steps over it."""

import math

import pytest
import torch

from hifa.cameras import orbit_cameras
from hifa.errors import HifaError
from hifa.guidance.guidance import Guidance, GuidanceConfig
from hifa.guidance.oracle import OracleConfig, OraclePrior, eps_from_x0, exact_x0, load_bank, scene_for_prompt
from hifa.guidance.prior import guided_noise
from hifa.guidance.schedules import stable_diffusion_alphas_cumprod

ABAR = stable_diffusion_alphas_cumprod()


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    config = OracleConfig(resolution=16, views=24, uncond_views_per_scene=6, cache_dir=str(tmp_path_factory.mktemp("cache")))
    return OraclePrior(config)


def test_one_image_bank_returns_that_image_at_every_t():
    image = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    for t in (0, 250, 980):
        x_t = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        x0, weights = exact_x0(x_t, ABAR[[t, t]], image, torch.zeros(2, 1))
        assert torch.allclose(x0, image.expand(2, -1, -1, -1)) and torch.allclose(weights, torch.ones(2, 1, dtype=torch.float64))


def test_low_noise_returns_the_nearest_bank_image():
    bank = torch.rand(5, 3, 8, 8, dtype=torch.float64)
    abar = ABAR[[0]]
    x_t = abar.sqrt() * bank[3:4] + 0.01 * torch.randn(1, 3, 8, 8, dtype=torch.float64)
    x0, weights = exact_x0(x_t, abar, bank, torch.zeros(1, 5))
    assert int(weights.argmax()) == 3 and torch.allclose(x0, bank[3:4], atol=1e-6)


def test_high_noise_falls_back_to_the_view_prior():
    bank = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    log_prior = torch.log(torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64))
    x0, weights = exact_x0(torch.zeros(1, 3, 8, 8, dtype=torch.float64), torch.tensor([1e-8], dtype=torch.float64), bank, log_prior)
    assert torch.allclose(weights, log_prior.exp(), atol=1e-4)


def test_eps_and_x0_are_consistent():
    x_t, x0 = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.rand(2, 3, 4, 4, dtype=torch.float64)
    abar = ABAR[[100, 700]]
    eps = eps_from_x0(x_t, x0, abar)
    a = abar.view(-1, 1, 1, 1)
    assert torch.allclose((x_t - (1 - a).sqrt() * eps) / a.sqrt(), x0)


def test_bank_is_ground_truth_and_cached(prior):
    bank = prior.bank("snowman")
    assert bank.images.shape == (24, 3, 16, 16) and bank.disparity.shape == (24, 16, 16)
    assert 0.1 < float((bank.disparity > 0).float().mean()) < 0.6
    assert torch.all(bank.disparity[bank.disparity > 0] > 1 / 4.2)  # surfaces lie within radius + object size
    files = list(prior.config.cache_root().glob("snowman-*.pt"))
    assert len(files) == 1
    again = load_bank(scene_for_prompt("a snowman with a carrot nose"), prior.config)
    assert torch.equal(again.images, bank.images)


def test_corrupt_cache_is_rebuilt(prior):
    prior.bank("green-torus")
    path = next(prior.config.cache_root().glob("green-torus-*.pt"))
    path.write_bytes(b"garbage")
    rebuilt = load_bank(scene_for_prompt("a green torus"), prior.config)
    assert rebuilt.images.shape[0] == 24 and path.stat().st_size > 1000


def test_cfg_with_scale_zero_is_the_unconditional_prediction(prior):
    cams = orbit_cameras(2, radius=3.2, fovy_deg=20.0)
    cond = prior.conditions("a green torus", cams, "perpneg")
    x_t = torch.rand(2, 3, 16, 16)
    t = torch.tensor([500, 500])
    eps_u = prior.predict_eps(x_t, t, [cond.uncond])[0]
    assert torch.allclose(guided_noise(prior, x_t, t, cond, 0.0), eps_u)
    assert not torch.allclose(guided_noise(prior, x_t, t, cond, 100.0), eps_u)


@pytest.mark.parametrize("mode,cutoff", [("perpneg", None), ("perpneg", 40.0), ("suffix", 40.0)])
def test_handles_sharing_a_bank_give_what_each_gives_alone(prior, mode, cutoff):
    from dataclasses import replace

    oracle = OraclePrior(replace(prior.config, view_cutoff_deg=cutoff))
    cams = orbit_cameras(2, polar_deg=60.0, radius=3.2, fovy_deg=20.0, start_azimuth_deg=40.0)
    cond = oracle.conditions("a green torus", cams, mode)
    handles = [cond.uncond, cond.positive, *cond.negatives]
    x_t, t = torch.rand(2, 3, 16, 16), torch.tensor([150, 600])
    together = oracle.predict_eps(x_t, t, handles)
    disparity = oracle.last_disparity.clone()
    for handle, eps in zip(handles, together):
        alone = oracle.predict_eps(x_t, t, [handle])[0]
        assert torch.allclose(eps, alone, atol=1e-6)
        if handle.positive:
            assert torch.allclose(disparity, oracle.last_disparity, atol=1e-6)
        # ... and what the float64 reference formula gives for that handle
        flat, sq, _, _ = oracle._matrix(handle.scene)
        abar = ABAR[t]
        x0, _ = exact_x0(x_t, abar, flat, oracle._log_prior(handle, 2, len(flat)), sq)
        assert torch.allclose(eps, eps_from_x0(x_t, x0, abar), atol=1e-5)


def test_one_step_s_denoising_calls_share_the_allowed_bank_rows_and_predict_as_fresh_calls(prior):
    """The rows a step's view priors allow are gathered once for all its DDIM calls (the same handles), again for new
    handles (the next step's), and the predictions are those of an uncached prior."""
    from dataclasses import replace

    oracle = OraclePrior(replace(prior.config, view_cutoff_deg=40.0))
    cams = orbit_cameras(1, polar_deg=60.0, radius=3.2, fovy_deg=20.0, start_azimuth_deg=40.0)
    cond = oracle.conditions("a green torus", cams, "perpneg")
    handles = [cond.positive, *cond.negatives]
    rows = oracle._rows("green-torus", handles, 1, torch.device("cpu"))
    assert len(rows[0]) < len(oracle._matrix("green-torus")[0])  # a subset was gathered
    for step, t in enumerate((900, 500, 100)):
        x_t = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(step))
        cached = oracle.predict_eps(x_t, torch.tensor([t]), [cond.uncond, *handles])
        assert oracle._rows("green-torus", handles, 1, torch.device("cpu")) is rows
        fresh = OraclePrior(oracle.config).predict_eps(x_t, torch.tensor([t]), [cond.uncond, *handles])
        for a, b in zip(cached, fresh):
            assert torch.equal(a, b)
    renewed = oracle.conditions("a green torus", cams, "perpneg")
    assert oracle._rows("green-torus", [renewed.positive, *renewed.negatives], 1, torch.device("cpu")) is not rows


def test_positive_call_exposes_the_ground_truth_disparity(prior):
    cams = orbit_cameras(1, radius=3.2, fovy_deg=20.0)
    cond = prior.conditions("a snowman with a carrot nose", cams, "none")
    bank = prior.bank("snowman")
    prior.predict_eps(bank.images[:1], torch.tensor([0]), [cond.positive])
    assert prior.last_disparity.shape == (1, 16, 16)
    assert torch.allclose(prior.last_disparity[0], bank.disparity[0], atol=1e-4)


def test_unknown_prompt_is_a_clear_error(prior):
    with pytest.raises(HifaError, match="no scene for the prompt 'a unicorn'"):
        prior.conditions("a unicorn", orbit_cameras(1, radius=3.2, fovy_deg=20.0), "perpneg")


def test_cameras_must_match_the_bank(prior):
    with pytest.raises(HifaError, match="radius 3.2 and fovy 20"):
        prior.conditions("a green torus", orbit_cameras(1, radius=3.0, fovy_deg=20.0), "perpneg")


@pytest.mark.parametrize("method,view_mode", [("hifa", "perpneg"), ("sds", "suffix")])
def test_guidance_step_backpropagates_to_the_render(prior, method, view_mode):
    config = GuidanceConfig(method=method, view_mode=view_mode, schedule="sqrt" if method == "hifa" else "uniform")
    render = torch.rand(2, 3, 12, 12, requires_grad=True)
    out = Guidance(prior, config).loss(render, "a red ball on a blue box", orbit_cameras(2, radius=3.2, fovy_deg=20.0), 10, 100)
    total = sum(out.terms.values())
    total.backward()
    assert torch.isfinite(render.grad).all() and render.grad.abs().sum() > 0
    if method == "hifa":
        assert set(out.terms) == {"latent", "image"} and out.x_hat.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("latent_gain,image_gain", [(1.0, 1.0), (13.0, 64.0)])
def test_one_candidate_x0_mode_is_a_reconstruction_loss(prior, latent_gain, image_gain):
    """method.md §9: one bank image and mode x0 give gradient (l_lat g_lat + l_rgb g_img) 0.05 s_res (x - x_k)."""
    target = prior.bank("mug").images[:1].double()

    class OneImage:
        alphas_cumprod, image_size, residual_gains = ABAR, 16, (latent_gain, image_gain)

        def encode(self, x, generator=None):
            return x

        def decode(self, z):
            return z.detach().clamp(0, 1)

        def conditions(self, prompt, cameras, view_mode):
            return prior.conditions("a white mug with a red handle", cameras, "none")

        def predict_eps(self, latents, t, handles):
            abar = ABAR[t]
            return [eps_from_x0(latents, target.expand_as(latents), abar) for _ in handles]

    config = GuidanceConfig(denoise_mode="x0", view_mode="none")
    render = torch.rand(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    out = Guidance(OneImage(), config).loss(render, "mug", orbit_cameras(1, radius=3.2, fovy_deg=20.0), 1, 100)
    sum(out.terms.values()).backward()
    expected = (1.0 * latent_gain + 0.1 * image_gain) * 0.05 * 1.0 * (render.detach() - target)
    assert torch.allclose(render.grad, expected, atol=1e-8)
    assert math.isclose(float(out.weight), 0.05)


def test_the_prior_counts_hifa_s_residuals_in_the_reference_s_units_at_its_resolution(prior):
    from dataclasses import replace

    from hifa.guidance.losses import residual_gains
    from hifa.guidance.oracle import ORACLE_PIXEL_STD

    assert prior.residual_gains == residual_gains(16, ORACLE_PIXEL_STD)
    assert OraclePrior(replace(prior.config, resolution=64)).residual_gains == residual_gains(64, ORACLE_PIXEL_STD)
    assert OraclePrior(replace(prior.config, residual_units="pixels")).residual_gains == (1.0, 1.0)
    with pytest.raises(HifaError, match="oracle.residual_units"):
        OracleConfig(residual_units="latents")


def test_view_cutoff_excludes_far_views_but_keeps_the_nearest():
    from hifa.guidance.oracle import angle_log_prior

    dirs = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.2, 1.0], [1.0, 0.0, 0.0]]), dim=-1)
    lp = angle_log_prior(torch.tensor([[0.0, 0.0, 1.0]]), dirs, math.radians(5), math.radians(20))
    assert torch.isfinite(lp[0, :2]).all() and lp[0, 2] == float("-inf")
    far = angle_log_prior(torch.tensor([[0.0, -1.0, 0.0]]), dirs, math.radians(5), math.radians(1))
    assert torch.isfinite(far).sum() == 1  # nothing within 1°: the nearest view alone remains


def test_a_cutoff_wider_than_the_sphere_changes_nothing(prior, tmp_path):
    from dataclasses import replace

    wide = OraclePrior(replace(prior.config, view_cutoff_deg=180.0))
    cams = orbit_cameras(1, radius=3.2, fovy_deg=20.0, start_azimuth_deg=33.0)
    x_t, t = torch.rand(1, 3, 16, 16), torch.tensor([300])
    a = prior.predict_eps(x_t, t, [prior.conditions("a green torus", cams, "none").positive])[0]
    b = wide.predict_eps(x_t, t, [wide.conditions("a green torus", cams, "none").positive])[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_a_tight_cutoff_pins_the_target_to_views_near_the_camera(prior):
    from dataclasses import replace

    tight = OraclePrior(replace(prior.config, view_cutoff_deg=1.0))
    bank = tight.bank("green-torus")
    k = 5
    direction = bank.directions[k]
    polar = math.degrees(math.acos(float(direction[1])))
    azimuth = math.degrees(math.atan2(float(direction[0]), float(direction[2])))
    cams = orbit_cameras(1, polar_deg=polar, radius=3.2, fovy_deg=20.0, start_azimuth_deg=azimuth)
    cond = tight.conditions("a green torus", cams, "none")
    blank = torch.ones(1, 3, 16, 16)
    abar = ABAR[[200]]
    eps = tight.predict_eps(blank * abar.sqrt().float(), torch.tensor([200]), [cond.positive])[0]
    x0 = (blank * abar.sqrt().float() - (1 - abar).sqrt().float() * eps) / abar.sqrt().float()
    assert torch.allclose(x0, bank.images[k : k + 1], atol=1e-4)  # only view k is allowed, whatever the render


def test_sector_prior_allows_exactly_the_label_s_views_near_the_camera_s_elevation():
    from hifa.cameras import sphere_cameras, view_label
    from hifa.guidance.oracle import bank_labels, sector_log_prior

    cams = sphere_cameras(600, radius=1.0, fovy_deg=20.0)
    dirs = torch.nn.functional.normalize(cams.origins, dim=-1)
    labels = bank_labels(dirs)
    assert labels == [view_label(float(a), float(p)) for a, p in zip(cams.azimuth_deg, cams.polar_deg)]
    camera = torch.tensor([[math.sin(math.radians(70)) * math.sin(math.radians(20)), math.cos(math.radians(70)), math.sin(math.radians(70)) * math.cos(math.radians(20))]])
    log_prior = sector_log_prior(camera, dirs, ["front"], labels, math.radians(4), math.radians(9))[0]
    polar = torch.rad2deg(torch.arccos(dirs[:, 1]))
    expected = torch.tensor([label == "front" for label in labels]) & ((polar - 70).abs() <= 9)
    assert torch.equal(torch.isfinite(log_prior), expected) and expected.sum() >= 5
    azimuth = torch.rad2deg(torch.atan2(dirs[:, 0], dirs[:, 2]))[expected]
    assert azimuth.min() < -15 and azimuth.max() > 15  # the whole sector, not views near the camera's azimuth
    inside = torch.isfinite(log_prior)
    expected_values = -torch.deg2rad(polar - 70) ** 2 / (2 * math.radians(4) ** 2)
    assert torch.allclose(log_prior[inside].float(), expected_values[inside].float(), atol=1e-3)
    lonely = sector_log_prior(camera, dirs, ["front"], labels, math.radians(4), math.radians(0.01))[0]
    assert torch.isfinite(lonely).sum() == 1 and labels[int(torch.isfinite(lonely).nonzero())] == "front"


def _front_view(prior):
    """A front-sector bank view of the torus: (its image (1, 3, S, S), polar, azimuth), and its x0 at t = 20."""
    from hifa.cameras import view_label

    bank = prior.bank("green-torus")
    polar = torch.rad2deg(torch.arccos(bank.directions[:, 1]))
    azimuth = torch.rad2deg(torch.atan2(bank.directions[:, 0], bank.directions[:, 2]))
    k = next(k for k in range(len(polar)) if view_label(float(azimuth[k]), float(polar[k])) == "front")
    image, t = bank.images[k : k + 1], torch.tensor([20])
    abar = ABAR[t]
    x_t = abar.sqrt().float() * image

    def x0_of(oracle, handle):
        eps = oracle.predict_eps(x_t, t, [handle])[0]
        return (x_t - (1 - abar).sqrt().float() * eps) / abar.sqrt().float()

    return image, float(polar[k]), float(azimuth[k]), x0_of


def test_suffix_names_a_sector_and_the_render_picks_the_view_within_it(prior):
    """A suffix does not know the camera's azimuth: a render of another front view gets that view back.

    'canonical' (the label's centre view only) gives the azimuth-0 view whatever the render.
    """
    from dataclasses import replace

    image, polar, azimuth, x0_of = _front_view(prior)
    sector = OraclePrior(replace(prior.config, view_cutoff_deg=180.0))
    canonical = OraclePrior(replace(prior.config, view_cutoff_deg=180.0, suffix_views="canonical"))
    other = 25.0 if azimuth < 0 else -25.0  # a front camera elsewhere in the sector
    cams = orbit_cameras(1, polar_deg=polar, radius=3.2, fovy_deg=20.0, start_azimuth_deg=other)
    assert cams.labels() == ["front"]
    assert torch.allclose(x0_of(sector, sector.conditions("a green torus", cams, "suffix").positive), image, atol=1e-3)
    pinned = canonical.conditions("a green torus", cams, "suffix").positive
    assert pinned.sector is None
    assert torch.allclose(pinned.directions[0, 0], torch.tensor(0.0), atol=1e-6)  # azimuth 0: x = 0


def test_perpneg_negatives_name_sectors_like_suffixes(prior):
    """'front view' as a Perp-Neg negative names the front sector: a render of a front view gets it back.

    'canonical' maps the negative to the azimuth-0 view, as method.md §9 first stated.
    """
    from dataclasses import replace

    image, polar, _, x0_of = _front_view(prior)
    sector = OraclePrior(replace(prior.config, view_cutoff_deg=180.0))
    canonical = OraclePrior(replace(prior.config, view_cutoff_deg=180.0, suffix_views="canonical"))
    cams = orbit_cameras(1, polar_deg=polar, radius=3.2, fovy_deg=20.0, start_azimuth_deg=40.0)  # negatives: front, side
    negatives = sector.conditions("a green torus", cams, "perpneg").negatives
    assert [n.sector for n in negatives] == [["front"], ["side"]] and not any(n.positive for n in negatives)
    assert torch.allclose(x0_of(sector, negatives[0]), image, atol=1e-3)
    pinned = canonical.conditions("a green torus", cams, "perpneg").negatives[0]
    assert pinned.sector is None and torch.allclose(pinned.directions[0, 0], torch.tensor(0.0), atol=1e-6)
    with pytest.raises(HifaError, match="oracle.suffix_views"):
        OracleConfig(suffix_views="everywhere")
