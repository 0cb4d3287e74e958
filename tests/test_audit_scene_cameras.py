"""Audit: camera positions, orientations, ray directions and config checks against hand geometry."""

import math

import pytest
import torch

from hifa.cameras import CameraSamplingConfig, camera_rays, make_cameras, orbit_cameras, sphere_cameras, view_label
from hifa.errors import ConfigError


def hand_position(r, polar_deg, azimuth_deg):
    """(r sin(theta) sin(phi), r cos(theta), r sin(theta) cos(phi)), theta from +y, phi from +z toward +x."""
    t, p = math.radians(polar_deg), math.radians(azimuth_deg)
    return [r * math.sin(t) * math.sin(p), r * math.cos(t), r * math.sin(t) * math.cos(p)]


def one_camera(r, polar, azimuth, fovy=20.0):
    full = lambda v: torch.tensor([float(v)], dtype=torch.float64)  # noqa: E731
    return make_cameras(full(r), full(polar), full(azimuth), full(fovy))


@pytest.mark.parametrize("polar,azimuth", [(90.0, 90.0), (60.0, 30.0), (120.0, -135.0)])
def test_camera_positions_follow_the_spherical_convention_in_degrees(polar, azimuth):
    cams = one_camera(3.0, polar, azimuth)
    assert torch.allclose(cams.origins[0], torch.tensor(hand_position(3.0, polar, azimuth), dtype=torch.float64), atol=1e-12)


def test_orbit_cameras_sit_at_their_azimuths():
    # Azimuth 90 is the +x side, 180 the back (-z), -90 the -x side.
    cams = orbit_cameras(4, polar_deg=90.0, radius=2.0)
    expected = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, -2.0], [-2.0, 0.0, 0.0]])
    assert torch.allclose(cams.origins, expected, atol=1e-5)


def test_centre_ray_of_an_odd_image_points_at_the_origin_from_any_camera():
    cams = one_camera(3.0, 60.0, 30.0)
    origins, dirs = camera_rays(cams.c2w, cams.fovy_deg, 3, 3)
    centre = dirs[0, 4]  # row 1, column 1: the optical axis, unit length in camera space (z = -1)
    expected = -torch.tensor(hand_position(1.0, 60.0, 30.0), dtype=torch.float64)
    assert torch.allclose(centre, expected, atol=1e-12)
    assert torch.allclose(origins[0, 4], torch.tensor(hand_position(3.0, 60.0, 30.0), dtype=torch.float64), atol=1e-12)


def test_rays_of_a_camera_on_the_x_axis_in_world_space():
    # Camera at +x looking at the origin, up +y: its right is -z, its forward -x.
    # fovy 90 on 2x2: f = 1, pixel centres at x, y = +-0.5 (row 0 on top).
    cams = one_camera(3.0, 90.0, 90.0, fovy=90.0)
    _, dirs = camera_rays(cams.c2w, cams.fovy_deg, 2, 2)
    expected = []
    for y in (0.5, -0.5):
        for x in (-0.5, 0.5):
            expected.append([-1.0, y, -x])  # x * right + y * up - back
    assert torch.allclose(dirs[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_rays_of_an_off_axis_camera_hit_the_points_of_its_image_plane():
    # Each ray o + d must pass through the image-plane point o + x*right + y*up - back.
    cams = one_camera(3.0, 50.0, -120.0, fovy=40.0)
    c2w = cams.c2w[0]
    right, up, back = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
    assert torch.allclose(back, torch.tensor(hand_position(1.0, 50.0, -120.0), dtype=torch.float64), atol=1e-12)
    assert abs(float(right[1])) < 1e-12 and float(up[1]) > 0  # level horizon, upright
    _, dirs = camera_rays(cams.c2w, cams.fovy_deg, 3, 5)
    f = 3 / (2 * math.tan(math.radians(20.0)))
    k = 0
    for py in range(3):
        for px in range(5):
            x, y = (px + 0.5 - 2.5) / f, -(py + 0.5 - 1.5) / f
            assert torch.allclose(dirs[0, k], x * right + y * up - back, atol=1e-12)
            k += 1


def test_sphere_cameras_use_the_half_offset_fibonacci_polar_angles():
    cams = sphere_cameras(4, radius=1.0)
    # cos(polar_k) = 1 - 2 (k + 1/2) / n = 0.75, 0.25, -0.25, -0.75: no camera at a pole, mirror-symmetric.
    assert torch.allclose(cams.origins[:, 1], torch.tensor([0.75, 0.25, -0.25, -0.75]), atol=1e-6)
    polar = sphere_cameras(9).polar_deg
    assert torch.allclose(polar + polar.flip(0), torch.full((9,), 180.0), atol=1e-4)


def test_label_boundary_at_minus_150_is_side():
    # DreamFusion's sectors are half-open [lo, hi) going round: side (right) is [-150, -30), front [-30, 30).
    assert view_label(-150.0, 70.0) == "side"
    assert view_label(-30.0, 70.0) == "front"
    assert view_label(150.0, 70.0) == "back"


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"polar_deg": (-10.0, 90.0)}, "cameras.polar_deg"),
        ({"polar_deg": (45.0, 190.0)}, "cameras.polar_deg"),
        ({"fovy_deg": (0.0, 30.0)}, "cameras.fovy_deg"),
        ({"fovy_deg": (10.0, 180.0)}, "cameras.fovy_deg"),
        ({"uniform_sphere_rate": 1.5}, "cameras.uniform_sphere_rate"),
        ({"uniform_sphere_rate": -0.1}, "cameras.uniform_sphere_rate"),
    ],
)
def test_out_of_range_camera_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        CameraSamplingConfig(**kwargs)
