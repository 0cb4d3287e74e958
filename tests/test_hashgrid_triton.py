"""The Triton hash-grid kernels against the pure-PyTorch encoding: values and table gradients.

On CPU the kernels run through Triton's interpreter (slow, so the inputs are small); on CUDA
they are compiled and compared with the PyTorch path on the same device.
"""

import pytest
import torch

from hifa.encoding import HashGridConfig, HashGridEncoding
from hifa.triton_support import triton_available

pytestmark = pytest.mark.skipif(not triton_available(), reason="needs the triton package")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pair(device: str, **grid) -> tuple[HashGridEncoding, HashGridEncoding]:
    """A pure-PyTorch encoding with random tables and a Triton one holding the same tables."""
    config = HashGridConfig(backend="torch", **grid)
    ref = HashGridEncoding(config, bound=1.5)
    with torch.no_grad():
        for table in ref.tables:
            table.uniform_(-1, 1)
    fast = HashGridEncoding(HashGridConfig(**{**config.__dict__, "backend": "triton"}), bound=1.5)
    fast.load_state_dict(ref.state_dict())
    return ref.to(device), fast.to(device)


def compare(ref: HashGridEncoding, fast: HashGridEncoding, points: torch.Tensor) -> None:
    a, b = ref(points), fast(points)
    assert b.shape == a.shape
    # Same positions bit for bit (no FMA on CUDA); the weights' product and the corner sum differ in order only.
    cuda = points.is_cuda
    torch.testing.assert_close(b, a, atol=1e-5 if cuda else 2e-6, rtol=1e-5)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    for level, (x, y) in enumerate(zip(ref.tables, fast.tables)):
        torch.testing.assert_close(y.grad, x.grad, atol=2e-4 if cuda else 5e-5, rtol=1e-4, msg=lambda m, level=level: f"level {level}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("interpolation", ["smoothstep", "linear"])
def test_triton_matches_pytorch_on_dense_and_hashed_levels(device, interpolation):
    ref, fast = pair(device, n_levels=6, log2_hashmap_size=13, finest_resolution=128, interpolation=interpolation)
    assert [lv.hashed for lv in ref.levels][:2] == [False, True]  # both kinds of level are covered
    points = torch.rand(777, 3, device=device) * 3.4 - 1.7  # some outside the bound: clamped onto it
    points[:4] = torch.tensor([[1.5, 1.5, 1.5], [-1.5, -1.5, -1.5], [1.5, -1.5, 0.0], [0.0, 0.0, 0.0]])
    compare(ref, fast, points)


@pytest.mark.parametrize("device", DEVICES)
def test_triton_matches_pytorch_on_points_along_rays(device):
    """Ordered samples along rays, the renderer's layout: many points add into the same coarse entries."""
    from hifa import hashgrid_triton

    ref, fast = pair(device, n_levels=5, log2_hashmap_size=12, base_resolution=8, finest_resolution=512)
    t = torch.linspace(0, 1, 97, device=device)
    origins, directions = torch.rand(23, 3, device=device) - 0.5, torch.randn(23, 3, device=device)
    points = (origins[:, None] + t[None, :, None] * directions[:, None]).reshape(-1, 3)  # 2231 points: ragged runs
    assert points.shape[0] % hashgrid_triton.BLOCK != 0
    compare(ref, fast, points)


@pytest.mark.parametrize("features", [1, 4, 8])
def test_triton_matches_pytorch_for_each_feature_width(features):
    ref, fast = pair(DEVICES[-1], n_levels=3, n_features_per_level=features, log2_hashmap_size=12, finest_resolution=64)
    compare(ref, fast, torch.rand(300, 3, device=DEVICES[-1]) * 3 - 1.5)


def test_triton_handles_an_empty_batch_and_repeated_points():
    ref, fast = pair("cpu", n_levels=2, log2_hashmap_size=10, finest_resolution=32)
    empty = fast(torch.zeros(0, 3))
    assert empty.shape == (0, fast.output_dim)
    # Many points in one cell: the atomic scatter must add every contribution, not keep the last.
    compare(ref, fast, torch.full((513, 3), 0.123))


def test_auto_backend_uses_triton_on_cuda_only():
    enc = HashGridEncoding(HashGridConfig(backend="auto"))
    assert not enc.uses_triton(torch.rand(4, 3))
    forced = HashGridEncoding(HashGridConfig(backend="triton"))
    assert forced.uses_triton(torch.rand(4, 3))
    assert not forced.uses_triton(torch.rand(4, 3, requires_grad=True))  # point gradients: PyTorch path
    if torch.cuda.is_available():
        assert enc.uses_triton(torch.rand(4, 3, device="cuda")) != enc.uses_tcnn(torch.device("cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_on_cuda_matches_pytorch_at_full_size():  # pragma: no cover - runs where CUDA exists
    ref, fast = pair("cuda")  # the presets' grid: 16 levels, 2^19 entries, finest 2048
    compare(ref, fast, torch.rand(200_000, 3, device="cuda") * 3 - 1.5)


@pytest.mark.parametrize("backward", [False, True])
def test_kernel_compiles_for_hopper_without_fused_multiply_add(backward):
    """The compiled path, checked on any machine: Triton builds it for sm_90 (an H100) ahead of time, through ptxas.

    No FMA in the PTX is what keeps positions bit-equal with PyTorch; atomic adds appear in the backward only,
    and relaxed (no acquire/release fences).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from hifa.hashgrid_triton import _kernel
    from hifa.triton_support import launch_options

    pointers = ["unit_ptr", "table_ptr", "feat_ptr", "scale_ptr"]
    signature = {**{p: "*fp32" for p in pointers}, **{p: "*i32" for p in ("res_ptr", "hashed_ptr", "offset_ptr", "size_ptr")}, "n_points": "i32"}
    constants = {"L": 4, "F": 2, "SMOOTH": True, "BLOCK": 256, "BACKWARD": backward}
    signature.update({name: "constexpr" for name in constants})
    source = ASTSource(triton.jit(_kernel), signature, constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=launch_options(torch.device("cuda")))
    ptx = compiled.asm["ptx"]
    assert compiled.asm["cubin"]  # ptxas accepted it
    atomics = ptx.count("red.global") + ptx.count("atom.global")
    assert "fma.rn.f32" not in ptx
    assert (atomics > 0) == backward
    assert ".acq_rel" not in ptx and "fence" not in ptx
