"""Hash-grid encoding: tiny-cuda-nn's layout, interpolation, gradients, backend equivalence."""

import math
from dataclasses import replace

import pytest
import torch

from hifa.encoding import HashGridConfig, HashGridEncoding, corner_indices, grid_levels, tcnn_available
from hifa.errors import ConfigError

SMALL = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, finest_resolution=64)


def test_default_levels_span_16_to_2048():
    config = HashGridConfig()
    assert config.per_level_scale == pytest.approx(2 ** (7 / 15))
    levels = grid_levels(config)
    assert len(levels) == 16 and config.output_dim == 32
    assert levels[0].scale == 15.0 and levels[0].resolution == 16 and not levels[0].hashed
    assert levels[-1].scale == pytest.approx(2047.0) and levels[-1].hashed and levels[-1].size == 2**19
    assert [lv.hashed for lv in levels] == [False] * 5 + [True] * 11
    # Dense levels hold every vertex, rounded up to a multiple of 8 (tiny-cuda-nn's alignment).
    for lv in levels[:5]:
        assert lv.size == math.ceil(lv.resolution**3 / 8) * 8
    offsets = [lv.offset for lv in levels]
    assert offsets == [sum(lv.size for lv in levels[:i]) for i in range(16)]


def test_hashed_index_is_the_uint32_prime_xor():
    level = grid_levels(HashGridConfig())[-1]
    pos = torch.tensor([[1000, 2047, 3], [0, 0, 0], [2047, 2047, 2047]])
    got = corner_indices(pos, level)
    for row, (x, y, z) in enumerate(pos.tolist()):
        for c in range(8):
            cx, cy, cz = x + (c & 1), y + ((c >> 1) & 1), z + ((c >> 2) & 1)
            expected = ((cx * 1) ^ ((cy * 2654435761) % 2**32) ^ ((cz * 805459861) % 2**32)) % 2**19
            assert int(got[row, c]) == expected


def test_dense_index_is_row_major_in_x():
    level = grid_levels(HashGridConfig())[0]
    got = corner_indices(torch.tensor([[2, 3, 4]]), level)[0]
    res = level.resolution
    assert int(got[0]) == 2 + 3 * res + 4 * res * res
    assert int(got[7]) == 3 + 4 * res + 5 * res * res


@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_vertices_return_table_entries_exactly(interpolation):
    config = HashGridConfig(n_levels=1, log2_hashmap_size=12, base_resolution=5, finest_resolution=5, interpolation=interpolation)
    enc = HashGridEncoding(config)
    with torch.no_grad():
        enc.tables[0].normal_()
    level = enc.levels[0]
    # Vertex i sits where unit * scale + 0.5 == i (tiny-cuda-nn's half-cell offset).
    ijk = torch.tensor([[1, 2, 3], [1, 1, 1], [4, 1, 2]])
    points = ((ijk - 0.5) / level.scale) * 2 - 1
    expected = enc.tables[0][corner_indices(ijk, level)[:, 0]]
    assert torch.allclose(enc(points), expected, atol=1e-5)


def test_linear_interpolation_is_affine_inside_a_cell():
    config = HashGridConfig(n_levels=1, log2_hashmap_size=12, base_resolution=5, finest_resolution=5, interpolation="linear")
    enc = HashGridEncoding(config)
    with torch.no_grad():
        enc.tables[0].normal_()
    a = torch.tensor([[0.1, 0.1, 0.1]])
    b = a + torch.tensor([[0.1, 0.0, 0.0]]) / enc.levels[0].scale  # same cell, along x
    mid = (a + b) / 2
    assert torch.allclose(enc(mid), (enc(a) + enc(b)) / 2, atol=1e-6)


def test_gradients_reach_every_level_table():
    enc = HashGridEncoding(SMALL)
    points = torch.rand(512, 3) * 2 - 1
    enc(points).pow(2).sum().backward()
    for table in enc.tables:
        assert table.grad is not None and table.grad.abs().sum() > 0
        assert torch.isfinite(table.grad).all()
    # Entries no point touched receive no gradient.
    touched = (enc.tables[-1].grad.abs().sum(-1) > 0).float().mean()
    assert 0 < touched < 1


def test_points_outside_the_bound_are_clamped():
    enc = HashGridEncoding(SMALL)
    with torch.no_grad():
        for t in enc.tables:
            t.normal_()
    inside = torch.tensor([[1.0, -1.0, 0.3]])
    outside = torch.tensor([[5.0, -3.0, 0.3]])
    assert torch.allclose(enc(inside), enc(outside))


def test_bad_grid_config_names_the_key():
    with pytest.raises(ConfigError, match="grid.n_levels"):
        HashGridConfig(n_levels=0)
    with pytest.raises(ConfigError, match="grid.interpolation"):
        HashGridConfig(interpolation="cubic")


@pytest.mark.cuda
@pytest.mark.skipif(not tcnn_available(), reason="needs CUDA and tiny-cuda-nn")
def test_tcnn_matches_pure_pytorch():  # pragma: no cover - runs where CUDA and tcnn exist
    config = HashGridConfig(backend="auto")
    enc = HashGridEncoding(config).cuda()
    with torch.no_grad():
        for t in enc.tables:
            t.uniform_(-1, 1)
    points = torch.rand(4096, 3, device="cuda") * 2 - 1
    fast = enc(points)
    fast.pow(2).sum().backward()
    fast_grads = [t.grad.clone() for t in enc.tables]
    enc.zero_grad()
    reference = HashGridEncoding(HashGridConfig(backend="torch")).cuda()
    reference.load_state_dict(enc.state_dict())
    slow = reference(points)
    slow.pow(2).sum().backward()
    assert torch.allclose(fast, slow, atol=1e-4)
    for a, b in zip(fast_grads, reference.tables):
        assert torch.allclose(a, b.grad, atol=1e-3)


@pytest.mark.parametrize("interpolation, features", [("linear", 2), ("smoothstep", 2), ("linear", 4)])
def test_cpp_kernel_matches_pure_pytorch(interpolation, features):
    """Both of the kernel's loops: the unrolled one for 2 features per level and the general one."""
    from hifa.cpu_kernels import cpu_kernels

    if cpu_kernels() is None:
        pytest.skip("no C++ compiler: the pure-PyTorch path is used")
    config = HashGridConfig(n_levels=16, n_features_per_level=features, log2_hashmap_size=14, interpolation=interpolation, backend="cpp")
    fast = HashGridEncoding(config)
    with torch.no_grad():
        for t in fast.tables:
            t.uniform_(-1, 1)
    slow = HashGridEncoding(replace(config, backend="torch"))
    slow.load_state_dict(fast.state_dict())
    # Random points, the cube's faces and corners, and points outside (clamped).
    points = torch.cat([torch.rand(3000, 3) * 2 - 1, torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [3.0, -2.0, 0.5]])])
    weights = torch.randn(points.shape[0], config.output_dim)
    out_fast, out_slow = fast(points), slow(points)
    assert torch.allclose(out_fast, out_slow, atol=1e-5)
    (out_fast * weights).sum().backward()
    (out_slow * weights).sum().backward()
    for a, b in zip(fast.tables, slow.tables):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)


def test_cpp_kernel_gives_the_same_bits_on_any_thread_count():
    """Threads split the points (forward; ranges that start inside a block of the kernel) or the levels (backward)."""
    from hifa.cpu_kernels import cpu_kernels

    kernels = cpu_kernels()
    if kernels is None:
        pytest.skip("no C++ compiler: the pure-PyTorch path is used")
    encoding = HashGridEncoding(HashGridConfig(n_levels=16, log2_hashmap_size=14, backend="cpp"))
    with torch.no_grad():
        for t in encoding.tables:
            t.uniform_(-1, 1)
    tables = [t.detach() for t in encoding.tables]
    unit = torch.rand(1001, 3, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(1001, encoding.config.output_dim, generator=torch.Generator().manual_seed(1))
    args = encoding.kernel_args()[:-1]
    one = kernels.forward(unit, tables, *args, 1), kernels.backward(grad, unit, tables, *args, 1)
    for threads in (3, 7):
        assert torch.equal(kernels.forward(unit, tables, *args, threads), one[0])
        assert all(torch.equal(a, b) for a, b in zip(kernels.backward(grad, unit, tables, *args, threads), one[1]))


def test_cpu_kernel_sources_are_staged_by_content(tmp_path, monkeypatch):
    """Two checkouts of the same code share one build (ninja reruns when source paths change); new code gets its own."""
    from hifa import cpu_kernels as kernels

    monkeypatch.setenv("HIFA_CACHE_DIR", str(tmp_path / "cache"))
    checkouts = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        for source in kernels.SOURCES:
            (folder / source.name).write_bytes(source.read_bytes())
        checkouts.append([folder / s.name for s in kernels.SOURCES])
    monkeypatch.setattr(kernels, "SOURCES", checkouts[0])
    first = kernels.staged_sources()
    monkeypatch.setattr(kernels, "SOURCES", checkouts[1])
    assert kernels.staged_sources() == first
    assert all(path.read_bytes() == src.read_bytes() for path, src in zip(first[1], checkouts[0]))
    checkouts[1][2].write_text(checkouts[1][2].read_text() + "\n// changed\n")
    changed = kernels.staged_sources()
    assert changed[0] != first[0] and changed[1][2].read_text().endswith("// changed\n")


def test_a_cached_cpu_kernel_build_is_imported_without_asking_ninja(tmp_path, monkeypatch):
    """Another venv's load() would rebuild (ninja compares command lines); the content-named build is imported as is."""
    from hifa import cpu_kernels as kernels

    if kernels.cpu_kernels() is None:
        pytest.skip("no C++ compiler: the pure-PyTorch path is used")
    name, _ = kernels.staged_sources()
    module = kernels.import_built(name)
    assert module is not None and hasattr(module, "adan_step") and hasattr(module, "forward")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # torch's helper creates the folder it names
    assert kernels.import_built(name) is None
