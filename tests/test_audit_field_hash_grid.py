"""Hash grid against a naive per-point reference, affine reproduction, the bound, point gradients, dtypes and validation."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from hifa.encoding import HashGridConfig, HashGridEncoding, grid_levels
from hifa.errors import ConfigError

TINY = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=11, base_resolution=3, finest_resolution=40)


def filled(config, seed=0):
    torch.manual_seed(seed)
    enc = HashGridEncoding(config)
    with torch.no_grad():
        for table in enc.tables:
            table.uniform_(-1, 1)
    return enc


def naive_encode(enc, points):
    """Per point, per level, per corner: tiny-cuda-nn's scheme written out with Python integers."""
    cfg, out = enc.config, []
    for p in points.tolist():
        unit = [min(max((c / enc.bound + 1) / 2, 0.0), 1.0) for c in p]
        feats = []
        for level, table in zip(grid_levels(cfg), enc.tables):
            pos = [u * level.scale + 0.5 for u in unit]
            base = [math.floor(c) for c in pos]
            frac = [c - b for c, b in zip(pos, base)]
            if cfg.interpolation == "smoothstep":
                frac = [f * f * (3 - 2 * f) for f in frac]
            acc = np.zeros(cfg.n_features_per_level)
            for dz in (0, 1):
                for dy in (0, 1):
                    for dx in (0, 1):
                        x, y, z = base[0] + dx, base[1] + dy, base[2] + dz
                        if level.hashed:
                            index = (x ^ (y * 2654435761 % 2**32) ^ (z * 805459861 % 2**32)) % level.size
                        else:
                            r = level.resolution
                            index = (x + y * r + z * r * r) % level.size
                        w = (frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1]) * (frac[2] if dz else 1 - frac[2])
                        acc += w * table[index].detach().double().numpy()
            feats.append(acc)
        out.append(np.concatenate(feats))
    return np.array(out)


POINTS = torch.cat([torch.rand(40, 3, generator=torch.Generator().manual_seed(3)) * 2 - 1,
                    torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, -1.0, 0.25], [0.0, 0.0, 0.0]])])


@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_dense_and_hashed_levels_match_a_naive_reference(interpolation, backend):
    enc = filled(replace(TINY, interpolation=interpolation, backend=backend))
    assert [lv.hashed for lv in enc.levels] == [False, False, True]  # 3^3 and 11^3 fit 2^11 entries, 40^3 does not
    np.testing.assert_allclose(enc(POINTS).detach().double().numpy(), naive_encode(enc, POINTS), atol=2e-5)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_a_larger_bound_scales_the_points(backend):
    small = filled(replace(TINY, backend=backend))
    large = HashGridEncoding(small.config, bound=2.5)
    large.load_state_dict(small.state_dict())
    np.testing.assert_allclose(large(POINTS * 2.5).detach().numpy(), small(POINTS).detach().numpy(), atol=2e-5)
    np.testing.assert_allclose(large(POINTS).detach().double().numpy(), naive_encode(large, POINTS), atol=2e-5)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_linear_interpolation_reproduces_an_affine_dense_table(backend):
    """Vertex (i, j, k) holds a.(i, j, k) + b; inside the grid the encoding is that affine function of unit*scale + 0.5."""
    config = HashGridConfig(n_levels=1, n_features_per_level=1, log2_hashmap_size=12, base_resolution=9, finest_resolution=9,
                            interpolation="linear", backend=backend)
    enc = HashGridEncoding(config)
    level = enc.levels[0]
    r = level.resolution
    a, b = torch.tensor([0.5, -1.25, 2.0]), 0.75
    ijk = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)  # (i, j, k)
    flat = ijk[:, 0] + ijk[:, 1] * r + ijk[:, 2] * r * r
    with torch.no_grad():
        enc.tables[0].zero_()
        enc.tables[0][flat, 0] = (ijk.float() * a).sum(-1) + b
    unit = torch.rand(200, 3, generator=torch.Generator().manual_seed(1)) * (r - 2.5) / level.scale  # upper corner <= r - 1
    expected = ((unit * level.scale + 0.5) * a).sum(-1) + b
    got = enc(unit * 2 - 1)[:, 0]
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_gradients_reach_the_points_and_match_finite_differences():
    enc = filled(replace(TINY, interpolation="smoothstep"))
    weights = torch.randn(1, enc.output_dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    p64 = (torch.rand(16, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    (enc(p64) * weights).sum().backward()
    eps = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = eps
        with torch.no_grad():
            fd = ((enc(p64 + step) - enc(p64 - step)) * weights).sum(-1) / (2 * eps)
        torch.testing.assert_close(p64.grad[:, axis], fd, atol=1e-4, rtol=1e-4)
    p32 = p64.detach().float().requires_grad_()  # float32 points that need a gradient: the path must give one
    (enc(p32) * weights.float()).sum().backward()
    assert p32.grad is not None
    torch.testing.assert_close(p32.grad.double(), p64.grad, atol=5e-3, rtol=5e-3)


def test_float64_points_give_the_float32_features():
    enc = filled(TINY)
    torch.testing.assert_close(enc(POINTS.double()).float(), enc(POINTS), atol=2e-5, rtol=0)


def test_a_fresh_table_is_tiny_noise_as_tiny_cuda_nn_initialises_it():
    enc = HashGridEncoding(HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4, finest_resolution=8))
    values = torch.cat([t.detach().reshape(-1) for t in enc.tables])
    assert values.abs().max() <= 1e-4 and values.abs().max() > 0


def test_level_scales_are_float32_values_and_resolutions_cover_them():
    levels = grid_levels(HashGridConfig())
    for lv in levels:
        assert float(np.float32(lv.scale)) == lv.scale
        assert lv.resolution == math.ceil(lv.scale) + 1
    assert levels[-1].scale == 2047.0 and levels[-1].resolution == 2048


@pytest.mark.parametrize("key, bad, good", [("base_resolution", 1, 2), ("log2_hashmap_size", 25, 24), ("log2_hashmap_size", 7, 8),
                                            ("n_features_per_level", 3, 8)])
def test_grid_settings_at_their_limits(key, bad, good):
    HashGridConfig(**{key: good, "finest_resolution": 2048})
    with pytest.raises(ConfigError, match=f"grid.{key}"):
        HashGridConfig(**{key: bad})
