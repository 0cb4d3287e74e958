"""Field heads against hand values: method-table defaults, activations, clamping to the bound, SH input, normals."""

import math

import pytest
import torch

from hifa.encoding import HashGridConfig
from hifa.errors import ConfigError
from hifa.field import FieldConfig, NeRFField

GRID = HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4, finest_resolution=8)


def zeroed(kind="hifa", **kw):
    """A field whose density net outputs exactly its bias (zero weights, zero bias unless set)."""
    field = NeRFField(FieldConfig(kind=kind, grid=GRID, **kw))
    last = field.sigma_net if kind == "hifa" else field.sigma_net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return field, last


def softplus(x):
    return math.log1p(math.exp(x))


def test_field_defaults_follow_the_method_table():
    c = FieldConfig()
    assert (c.kind, c.bound, c.blob_density, c.blob_radius) == ("hifa", 1.0, 5.0, 0.2)
    assert (c.sh_degree, c.view_dependent_rate, c.normal_eps) == (4, 0.5, 1e-2)


@pytest.mark.parametrize("key, bad", [("bound", 0.0), ("blob_radius", 0.0), ("sh_degree", 0), ("sh_degree", 5),
                                      ("view_dependent_rate", 1.01), ("view_dependent_rate", -0.01), ("normal_eps", 0.0)])
def test_field_settings_outside_their_range_name_the_key(key, bad):
    with pytest.raises(ConfigError, match=f"field.{key}"):
        FieldConfig(**{key: bad})


@pytest.mark.parametrize("key, good", [("sh_degree", 1), ("view_dependent_rate", 0.0), ("view_dependent_rate", 1.0)])
def test_field_settings_at_their_limits_are_valid(key, good):
    assert getattr(FieldConfig(**{key: good}), key) == good


def test_hifa_density_is_softplus_of_the_cone_blob():
    """Raw density 0: sigma = softplus(5 (1 - |x| / 0.2)): softplus(5) at the centre, ln 2 at |x| = 0.2."""
    field, _ = zeroed("hifa")
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, -0.2], [0.3, 0.0, 0.4]])
    expected = [softplus(5.0), softplus(2.5), math.log(2.0), softplus(5 * (1 - 0.5 / 0.2))]
    assert field.density(points).tolist() == pytest.approx(expected, rel=1e-5)


def test_dreamfusion_density_clamps_its_gradient_at_exp_15():
    """Raw density 30 at the centre: sigma = exp(30 + 5), its gradient w.r.t. the raw output exp(15)."""
    field, last = zeroed("dreamfusion")
    with torch.no_grad():
        last.bias[0] = 30.0
    sigma = field.density(torch.zeros(1, 3))
    assert sigma.item() == pytest.approx(math.exp(35.0), rel=1e-5)
    sigma.sum().backward()
    assert last.bias.grad[0].item() == pytest.approx(math.exp(15.0), rel=1e-5)


def test_points_outside_the_bound_take_the_density_on_it():
    field, _ = zeroed("hifa", blob_radius=2.0)
    inside = field.density(torch.tensor([[1.0, -0.5, 0.0]]))
    outside = field.density(torch.tensor([[3.0, -0.5, 0.0]]))
    assert outside.item() == pytest.approx(inside.item(), rel=1e-6)
    assert inside.item() == pytest.approx(softplus(5 * (1 - math.sqrt(1.25) / 2.0)), rel=1e-5)


def test_a_larger_bound_clamps_at_that_bound():
    field, _ = zeroed("hifa", bound=2.0, blob_radius=2.0)
    sigma = field.density(torch.tensor([[1.5, 0.0, 0.0], [5.0, 0.0, 0.0]])).tolist()
    assert sigma == pytest.approx([softplus(5 * (1 - 1.5 / 2.0)), softplus(5 * (1 - 2.0 / 2.0))], rel=1e-5)


def test_dreamfusion_albedo_is_the_sigmoid_of_its_logits():
    field, _ = zeroed("dreamfusion")
    got = field.albedo(torch.tensor([[0.0, 2.0, -2.0]]))[0].tolist()
    assert got == pytest.approx([0.5, 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(2.0))], rel=1e-6)


def test_without_directions_the_sh_input_is_zero():
    torch.manual_seed(0)
    field = NeRFField(FieldConfig(grid=GRID))
    feature = torch.randn(7, 32)
    expected = torch.sigmoid(field.color_net(torch.cat([feature, torch.zeros(7, 16)], -1)))
    torch.testing.assert_close(field.albedo(feature), expected)


def test_albedo_ignores_the_length_of_the_view_direction():
    torch.manual_seed(1)
    field = NeRFField(FieldConfig(grid=GRID))
    torch.nn.init.normal_(field.color_net[0].weight)
    feature, d = torch.randn(6, 32), torch.randn(6, 3)
    torch.testing.assert_close(field.albedo(feature, d * 3.7), field.albedo(feature, d))
    torch.testing.assert_close(field.albedo(feature, d[:3] * 0.2, 2), field.albedo(feature, d[:3].repeat_interleave(2, 0)))


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_the_configured_sh_degree_feeds_the_colour_net(degree):
    torch.manual_seed(2)
    field = NeRFField(FieldConfig(grid=GRID, sh_degree=degree))
    torch.nn.init.normal_(field.color_net[0].weight)
    feature, a, b = torch.randn(4, 32), torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    view_a, view_b = field.albedo(feature, a.expand(4, 3)), field.albedo(feature, b.expand(4, 3))
    torch.testing.assert_close(field.albedo(feature, a, 4), view_a)
    if degree == 1:  # one constant harmonic: no view dependence at all
        torch.testing.assert_close(view_a, view_b)
    else:
        assert not torch.allclose(view_a, view_b)


def test_an_infinite_density_difference_gives_a_finite_normal():
    field = NeRFField(FieldConfig(grid=GRID))
    field.density = lambda x, exact=False: torch.where(x[:, 0] > 0.5, torch.inf, 0.0)  # type: ignore[method-assign]
    normals = field.normals(torch.tensor([[0.499, 0.0, 0.0]]))
    assert torch.isfinite(normals).all()  # method.md: nan_to_num before normalising, never NaN
    assert normals[0, 0] <= 0 and normals[0, 1:].abs().max() == 0
