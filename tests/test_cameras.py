import math

import pytest
import torch

from hifa.cameras import (
    CameraSamplingConfig,
    camera_rays,
    look_at,
    orbit_cameras,
    sample_cameras,
    sphere_cameras,
    view_label,
    wrap_azimuth,
)
from hifa.errors import ConfigError


@pytest.mark.parametrize(
    "azimuth,label",
    [(0.0, "front"), (29.9, "front"), (30.0, "side"), (-30.1, "side"), (149.9, "side"), (150.0, "back"), (-150.1, "back"), (180.0, "back")],
)
def test_view_labels_match_method_table(azimuth, label):
    assert view_label(azimuth, 70.0) == label


def test_overhead_label_overrides_azimuth():
    assert view_label(0.0, 30.0) == "overhead"
    assert view_label(0.0, 30.1) == "front"


def test_wrap_azimuth_half_open_interval():
    wrapped = wrap_azimuth(torch.tensor([-180.0, 180.0, 190.0, -190.0, 540.0, 0.0], dtype=torch.float64))
    assert wrapped.tolist() == pytest.approx([180.0, 180.0, -170.0, 170.0, 180.0, 0.0])


def test_look_at_is_orthonormal_and_faces_origin():
    positions = torch.tensor([[0.0, 0.0, 3.0], [1.0, 2.0, -2.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
    c2w = look_at(positions)
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3, dtype=torch.float64).expand(3, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(3, dtype=torch.float64))
    forward = -rot[:, :, 2]
    assert torch.allclose(forward, -torch.nn.functional.normalize(positions, dim=-1), atol=1e-12)


def test_front_camera_sits_on_positive_z_with_x_to_the_right():
    cams = orbit_cameras(1, polar_deg=90.0, radius=3.0)
    assert torch.allclose(cams.origins[0], torch.tensor([0.0, 0.0, 3.0]), atol=1e-6)
    assert torch.allclose(cams.c2w[0, :3, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


def test_rays_follow_opengl_pinhole_with_planar_depth():
    c2w = torch.eye(4)[None]
    fovy = torch.tensor([90.0])
    origins, dirs = camera_rays(c2w, fovy, 2, 2)
    # f = H / (2 tan 45°) = 1; pixel centres at ±0.5; y flips (row 0 is the top).
    expected = torch.tensor([[-0.5, 0.5, -1.0], [0.5, 0.5, -1.0], [-0.5, -0.5, -1.0], [0.5, -0.5, -1.0]])
    assert torch.allclose(dirs[0], expected)
    assert torch.all(origins == 0)


def test_orbit_cameras_are_evenly_spaced_and_at_eval_defaults():
    cams = orbit_cameras(4)
    assert cams.azimuth_deg.tolist() == pytest.approx([0.0, 90.0, 180.0, -90.0])
    assert torch.allclose(cams.origins.norm(dim=-1), torch.full((4,), 3.2))
    assert torch.allclose(cams.polar_deg, torch.full((4,), 70.0))
    heights = cams.origins[:, 1]
    assert torch.allclose(heights, torch.full((4,), 3.2 * math.cos(math.radians(70))), atol=1e-5)


def test_sampled_cameras_respect_ranges_and_hemisphere_share():
    config = CameraSamplingConfig()
    cams = sample_cameras(4000, config, torch.Generator().manual_seed(1))
    r = cams.origins.norm(dim=-1)
    assert r.min() >= 3.0 - 1e-5 and r.max() <= 3.5 + 1e-5
    assert cams.fovy_deg.min() >= 10.0 and cams.fovy_deg.max() <= 30.0
    in_range = (cams.polar_deg >= 45.0 - 1e-4) & (cams.polar_deg <= 105.0 + 1e-4)
    # Off-range cameras come from the upper-hemisphere branch: they are above the horizon.
    assert torch.all(cams.origins[~in_range, 1] >= -1e-5)
    # Half the cameras use the sphere branch; of those, polar < 45° iff y > |(x, z)|, which has
    # probability E_y[pi y^2 / 4] = pi / 12 for y ~ U(0, 1) and (x, z) uniform on [-1, 1]^2.
    share = 1.0 - in_range.float().mean()
    assert float(share) == pytest.approx(0.5 * math.pi / 12, abs=0.02)
    assert torch.all((cams.azimuth_deg > -180.0) & (cams.azimuth_deg <= 180.0))


def test_no_sphere_share_keeps_every_camera_in_range():
    config = CameraSamplingConfig(uniform_sphere_rate=0.0, polar_deg=(60.0, 80.0), azimuth_deg=(0.0, 120.0))
    cams = sample_cameras(500, config, torch.Generator().manual_seed(2))
    assert cams.polar_deg.min() >= 60.0 - 1e-4 and cams.polar_deg.max() <= 80.0 + 1e-4
    assert cams.azimuth_deg.min() >= -1e-4 and cams.azimuth_deg.max() <= 120.0 + 1e-4


def test_sphere_cameras_cover_both_hemispheres():
    cams = sphere_cameras(64)
    assert (cams.origins[:, 1] > 0).sum() == 32


@pytest.mark.parametrize("kwargs,key", [({"radius": (0.5, 1.0)}, "cameras.radius"), ({"fovy_deg": (30.0, 10.0)}, "cameras.fovy_deg")])
def test_bad_camera_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        CameraSamplingConfig(**kwargs)
