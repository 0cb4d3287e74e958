"""The renderer on an analytic field with a known answer, and on the real field."""

import pytest
import torch
from torch import nn

from hifa.background import BackgroundMLP
from hifa.cameras import orbit_cameras
from hifa.encoding import HashGridConfig
from hifa.errors import ConfigError
from hifa.field import FieldConfig, NeRFField
from hifa.renderer import RayOptions, Renderer, RendererConfig
from tests.field_twins import fitted_field, precision_twin

RADIUS, COLOR = 0.5, torch.tensor([0.9, 0.3, 0.1])


class BallField(nn.Module):
    """A dense ball of one colour: the exact surface is known."""

    config = FieldConfig()

    def __init__(self, density: float = 2000.0):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.inside_density = density

    def density_features(self, points, exact=False):
        inside = (points.norm(dim=-1) < RADIUS).float()
        return inside * self.inside_density + self.dummy * 0, COLOR.expand(points.shape[0], 3)

    def density(self, points):
        return self.density_features(points)[0]

    def albedo(self, feature, directions=None, rays=None, exact=False):
        return feature

    def normals(self, points):
        return torch.nn.functional.normalize(points, dim=-1)


def ball_renderer(coarse=128, fine=64, smoothing="boxcar"):
    return Renderer(BallField(), BackgroundMLP(), RendererConfig(num_coarse=coarse, num_fine=fine, smoothing=smoothing, chunk_rays=100))


def planar_hit(origins, dirs):
    """First intersection parameter t of o + t d with the ball (inf on a miss)."""
    a = (dirs * dirs).sum(-1)
    b = 2 * (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - RADIUS**2
    disc = b * b - 4 * a * c
    t = (-b - torch.sqrt(disc.clamp(min=0))) / (2 * a)
    return torch.where(disc > 0, t, torch.full_like(t, float("inf")))


def test_ball_depth_opacity_and_colour_match_the_analytic_answer():
    cams = orbit_cameras(2)
    origins, dirs = cams.rays(24, 24)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    out = ball_renderer()(origins, dirs, RayOptions(background=torch.ones(3)))
    t = planar_hit(origins, dirs)
    hit = torch.isfinite(t)
    # Rays grazing the rim cross less than a sample spacing of ball: compare well-inside rays.
    deep = hit & (out["opacity"] > 0.999)
    assert deep.sum() > 100
    assert torch.allclose(out["depth"][deep], t[deep], atol=0.01)
    assert torch.all(out["opacity"][~hit] < 1e-6)
    assert torch.allclose(out["image"][deep], COLOR.expand(int(deep.sum()), 3), atol=1e-3)
    assert torch.allclose(out["image"][~hit], torch.ones(int((~hit).sum()), 3))
    weights_sum = out["weights"].sum(-1)
    assert torch.allclose(weights_sum, out["opacity"])
    assert out["weights"].shape == (origins.shape[0], 192)


def test_fine_samples_concentrate_at_the_surface():
    origins = torch.tensor([[0.0, 0.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0]])
    out = ball_renderer(coarse=64, fine=64)(origins, dirs, RayOptions())
    z = out["z_vals"][0]
    near_surface = ((z - 2.5).abs() < 0.1).sum()
    assert near_surface >= 48  # 64 fine samples, plus coarse ones, crowd around t = 2.5


def test_chunked_rendering_equals_one_pass():
    renderer = ball_renderer(coarse=32, fine=16)
    origins, dirs = orbit_cameras(1).rays(16, 16)
    opts = RayOptions(background=torch.zeros(3))
    one = renderer(origins[0], dirs[0], opts)
    chunked = renderer.render_rays_chunked(origins[0], dirs[0], opts)
    for key in ("image", "depth", "opacity", "z_variance"):
        assert torch.allclose(one[key], chunked[key])


def test_render_views_shapes_and_normals():
    renderer = ball_renderer(coarse=32, fine=16)
    views = renderer.render_views(orbit_cameras(2), 8, 10, RayOptions(background=torch.ones(3), need_normals=True))
    assert views["image"].shape == (2, 8, 10, 3)
    assert views["depth"].shape == (2, 8, 10) and views["opacity"].shape == (2, 8, 10)
    assert views["normals"].shape == (2, 8, 10, 3)


def test_training_mode_jitters_samples():
    renderer = ball_renderer(coarse=16, fine=8)
    origins, dirs = torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    a = renderer(origins, dirs, RayOptions(training=True))["z_vals"]
    b = renderer(origins, dirs, RayOptions(training=True))["z_vals"]
    c = renderer(origins, dirs, RayOptions())["z_vals"]
    d = renderer(origins, dirs, RayOptions())["z_vals"]
    assert not torch.allclose(a, b) and torch.equal(c, d)


def test_gradients_reach_the_real_field():
    grid = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, finest_resolution=32)
    renderer = Renderer(NeRFField(FieldConfig(grid=grid)), BackgroundMLP(), RendererConfig(num_coarse=16, num_fine=8))
    origins, dirs = orbit_cameras(1).rays(8, 8)
    out = renderer(origins[0], dirs[0], RayOptions(training=True, shading="lambertian", light_dir=torch.tensor([0.0, 1.0, 0.0])))
    (out["image"].mean() + out["z_variance"].mean()).backward()
    assert renderer.field.encoding.tables[0].grad.abs().sum() > 0
    assert renderer.background.net[0].weight.grad.abs().sum() > 0
    assert "orient" in out and torch.isfinite(out["orient"]).all()


def test_bad_renderer_config_names_the_key():
    with pytest.raises(ConfigError, match="renderer.smoothing"):
        RendererConfig(smoothing="gaussian")
    with pytest.raises(ConfigError, match="renderer.num_coarse"):
        RendererConfig(num_coarse=0)


def test_normals_on_significant_samples_only_match_the_full_computation():
    torch.manual_seed(0)
    field = NeRFField(FieldConfig(grid=HashGridConfig(n_levels=4, log2_hashmap_size=10, finest_resolution=64, backend="torch")))
    origins, dirs = orbit_cameras(1).rays(12, 12)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    options = RayOptions(
        training=False, shading="lambertian", background=torch.ones(3), light_dir=torch.tensor([0.0, 1.0, 0.0]), need_normals=True
    )
    outputs, grads, probed = [], [], []
    for threshold in (0.0, 1e-4):
        renderer = Renderer(field, BackgroundMLP(), RendererConfig(num_coarse=32, num_fine=16, normal_weight_threshold=threshold))
        calls = []
        original = field.normals
        field.normals = lambda p, calls=calls, original=original: calls.append(len(p)) or original(p)
        try:
            out = renderer(origins, dirs, options)
        finally:
            del field.normals
        field.zero_grad()
        (out["image"].sum() + out["orient"].sum()).backward()
        outputs.append(out)
        grads.append(torch.cat([p.grad.flatten() for p in field.parameters() if p.grad is not None]))
        probed.append(sum(calls))
    full, skipped = outputs
    assert probed[1] < probed[0] / 2  # most samples of a fresh field are empty
    for key in ("image", "normals", "orient"):
        assert torch.allclose(full[key], skipped[key], atol=2e-3), key
    assert torch.allclose(grads[0], grads[1], rtol=1e-2, atol=1e-3 * grads[0].abs().max().item())


def test_normal_weight_threshold_is_validated():
    with pytest.raises(ConfigError, match="normal_weight_threshold"):
        RendererConfig(normal_weight_threshold=-1.0)


def test_orientation_on_a_random_ray_subset_equals_the_full_values_on_those_rays():
    torch.manual_seed(0)
    field = NeRFField(FieldConfig(grid=HashGridConfig(n_levels=4, log2_hashmap_size=10, finest_resolution=64, backend="torch")))
    renderer = Renderer(field, BackgroundMLP(), RendererConfig(num_coarse=16, num_fine=8))
    origins, dirs = orbit_cameras(1).rays(8, 8)
    origins, dirs = origins[0], dirs[0]
    full = renderer(origins, dirs, RayOptions(background=torch.ones(3), need_normals=True))
    options = RayOptions(background=torch.ones(3), need_normals=True, normal_ray_fraction=0.25, generator=torch.Generator().manual_seed(3))
    subset = renderer(origins, dirs, options)
    rays = torch.randperm(64, generator=torch.Generator().manual_seed(3))[:16]
    assert subset["orient"].shape == (16,) and "normals" not in subset
    assert torch.allclose(subset["orient"], full["orient"][rays], atol=1e-6)
    assert torch.allclose(subset["image"], full["image"])


def test_renders_outside_training_run_the_mlps_in_fp32_whatever_the_field_precision():
    """Validation and evaluation renders do not depend on field.mlp_precision; training renders use it."""
    config = FieldConfig(grid=HashGridConfig(n_levels=4, log2_hashmap_size=12, finest_resolution=64), blob_radius=0.6, mlp_precision="fp32")
    exact = fitted_field(config, 1.0)
    fast = precision_twin(exact, "bf16")
    background = BackgroundMLP()
    origins, dirs = (t[0] for t in orbit_cameras(1).rays(12, 12))
    images = {}
    for name, field in (("fp32", exact), ("bf16", fast)):
        renderer = Renderer(field, background, RendererConfig(num_coarse=16, num_fine=8))
        for training in (False, True):
            options = RayOptions(training=training, background=torch.ones(3), generator=torch.Generator().manual_seed(1))
            images[name, training] = renderer(origins, dirs, options)["image"].detach()
    assert torch.equal(images["bf16", False], images["fp32", False])
    assert not torch.equal(images["bf16", True], images["fp32", True])  # training renders do run in bf16
