"""Field heads (method.md §2): blobs, activations, SH input, normals, shading."""

import pytest
import torch

from hifa.encoding import HashGridConfig
from hifa.errors import ConfigError
from hifa.field import FieldConfig, NeRFField, cone_blob, gaussian_blob, mlp_dtype, shade, trunc_exp
from tests.field_twins import fitted_field
from hifa.sh import sh_encode

SMALL_GRID = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, finest_resolution=32)


def test_cone_blob_values():
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert cone_blob(pts, 5.0, 0.2).tolist() == pytest.approx([5.0, 0.0, -20.0])


def test_gaussian_blob_values():
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
    assert gaussian_blob(pts, 5.0, 0.2).tolist() == pytest.approx([5.0, 5.0 * torch.exp(torch.tensor(-0.5)).item()])


def test_trunc_exp_clamps_the_gradient_only():
    x = torch.tensor([1.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    y.sum().backward()
    assert torch.allclose(y, torch.exp(x.detach()))
    assert torch.allclose(x.grad, torch.exp(torch.tensor([1.0, 15.0])))


@pytest.mark.parametrize("kind", ["hifa", "dreamfusion"])
def test_fresh_field_has_the_blob_at_the_centre(kind):
    field = NeRFField(FieldConfig(kind=kind, grid=SMALL_GRID))
    sigma = field.density(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0]]))
    assert sigma[0] > 2.0 and sigma[0] > 10 * sigma[1]


def test_hifa_albedo_uses_sh_only_when_given_directions():
    field = NeRFField(FieldConfig(grid=SMALL_GRID))
    points = torch.rand(16, 3) - 0.5
    _, feature = field.density_features(points)
    assert feature.shape == (16, 32)
    plain = field.albedo(feature)
    view_a = field.albedo(feature, torch.tensor([[0.0, 0.0, 1.0]]).expand(16, 3))
    view_b = field.albedo(feature, torch.tensor([[1.0, 0.0, 0.0]]).expand(16, 3))
    assert plain.min() >= 0 and plain.max() <= 1
    assert not torch.allclose(view_a, view_b)


def test_hifa_albedo_with_per_ray_directions_equals_per_sample_directions():
    field = NeRFField(FieldConfig(grid=SMALL_GRID))
    torch.nn.init.normal_(field.color_net[0].weight)  # large weights: a wrong split would show
    _, feature = field.density_features(torch.rand(30, 3) - 0.5)
    directions = torch.randn(5, 3)
    rays = torch.tensor([0, 1, 2, 3, 4, 4] * 5, dtype=torch.int32)
    per_sample = field.albedo(feature, directions[rays.long()])
    # Rows as 6 consecutive samples per ray: the broadcast form; and the same rays by index.
    consecutive = field.albedo(feature, directions, 6)
    indexed = field.albedo(feature, directions, rays)
    reference = field.albedo(feature, directions.repeat_interleave(6, 0))
    torch.testing.assert_close(indexed, per_sample, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(consecutive, reference, atol=1e-6, rtol=1e-5)
    outs = (indexed, per_sample, consecutive, reference)
    grads = [torch.autograd.grad(out.square().sum(), list(field.color_net.parameters()), retain_graph=True) for out in outs]
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads[2], grads[3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sh_basis_is_orthonormal_on_the_sphere():
    d = torch.nn.functional.normalize(torch.randn(200_000, 3, dtype=torch.float64), dim=-1)
    basis = sh_encode(d, 4)
    gram = 4 * torch.pi * basis.T @ basis / d.shape[0]
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.03)


def test_normals_point_outward_for_a_ball_density():
    field = NeRFField(FieldConfig(grid=SMALL_GRID))
    field.density = lambda x, exact=False: torch.relu(1.0 - x.norm(dim=-1)) * 10  # type: ignore[method-assign]
    points = torch.nn.functional.normalize(torch.randn(32, 3), dim=-1) * 0.5
    normals = field.normals(points)
    assert torch.allclose(normals, torch.nn.functional.normalize(points, dim=-1), atol=1e-4)


def test_shading_modes():
    albedo = torch.tensor([[0.5, 0.2, 1.0]])
    n = torch.tensor([[0.0, 0.0, 1.0]])
    light = torch.tensor([0.0, 0.0, 1.0])
    assert torch.equal(shade(albedo, None, "albedo"), albedo)
    assert torch.allclose(shade(albedo, n, "normal"), torch.tensor([[0.5, 0.5, 1.0]]))
    assert torch.allclose(shade(albedo, n, "lambertian", light, ambient=0.2), albedo)
    assert torch.allclose(shade(albedo, n, "lambertian", -light, ambient=0.2), albedo * 0.2)
    assert torch.allclose(shade(albedo, n, "textureless", -light, ambient=0.2), torch.full((1, 3), 0.2))
    with pytest.raises(ValueError, match="needs normals"):
        shade(albedo, None, "lambertian", light)


def test_bad_field_config_names_the_key():
    with pytest.raises(ConfigError, match="field.kind"):
        FieldConfig(kind="nerfacto")
    with pytest.raises(ConfigError, match="field.mlp_precision"):
        FieldConfig(mlp_precision="fp8")


def test_auto_mlp_precision_is_bf16_on_cuda_and_fp32_elsewhere():
    assert FieldConfig().mlp_precision == "auto"
    assert mlp_dtype("auto", "cuda") == torch.bfloat16
    assert mlp_dtype("auto", "cpu") is None
    assert mlp_dtype("bf16", "cpu") == torch.bfloat16
    assert mlp_dtype("fp32", "cuda") is None


def test_auto_precision_field_on_cpu_is_the_exact_fp32_field():
    exact, auto = _trained_looking_field("hifa", "fp32"), _trained_looking_field("hifa", "auto")
    points = torch.rand(512, 3) * 1.6 - 0.8
    assert torch.equal(exact.density(points), auto.density(points))


def _trained_looking_field(kind: str, precision: str) -> NeRFField:
    return fitted_field(FieldConfig(kind=kind, grid=SMALL_GRID, mlp_precision=precision), 0.5)


@pytest.mark.parametrize("kind", ["hifa", "dreamfusion"])
def test_bf16_mlps_stay_close_to_fp32_in_values_and_gradients(kind):
    """field.mlp_precision='bf16' is the fp32 field up to bf16 rounding, outputs fp32, and leaves normals exact."""
    exact, fast = _trained_looking_field(kind, "fp32"), _trained_looking_field(kind, "bf16")
    fast.load_state_dict(exact.state_dict())
    points = torch.rand(4096, 3) * 1.6 - 0.8
    dirs = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    results = []
    for field in (exact, fast):
        sigma, feature = field.density_features(points)
        rgb = field.albedo(feature, dirs, 64)
        assert sigma.dtype == rgb.dtype == torch.float32
        (sigma.log1p().sum() + rgb.sum()).backward()
        grads = torch.cat([t.grad.flatten() for t in field.encoding.tables] + [p.grad.flatten() for n, p in field.named_parameters() if "encoding" not in n])
        results.append((sigma.detach(), rgb.detach(), grads))
    (s0, c0, g0), (s1, c1, g1) = results
    assert not torch.equal(s0, s1)  # bf16 really ran
    assert torch.allclose(s1, s0, rtol=3e-2, atol=1e-3)
    assert torch.allclose(c1, c0, atol=1e-2)
    assert torch.nn.functional.cosine_similarity(g0, g1, dim=0) > 0.999
    assert torch.equal(fast.normals(points[:256]), exact.normals(points[:256]))


def test_normals_stay_fp32_inside_a_callers_bf16_autocast():
    field = _trained_looking_field("hifa", "fp32")
    points = torch.rand(256, 3) * 1.6 - 0.8
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = field.normals(points)
        assert field.density(points).dtype == torch.float32
    assert torch.equal(inside, field.normals(points))
