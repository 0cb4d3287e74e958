"""CUDA paths against the CPU reference on small inputs (skipped where no GPU is present)."""

import copy

import pytest
import torch

from hifa.background import BackgroundMLP
from hifa.cameras import orbit_cameras
from hifa.encoding import HashGridConfig, HashGridEncoding
from hifa.field import FieldConfig, NeRFField
from hifa.renderer import RayOptions, Renderer, RendererConfig
from hifa.trainer import Trainer
from tests.cuda.world import requires_cuda, tiny_cuda_config
from tests.field_twins import fitted_field, precision_twin

pytestmark = requires_cuda
GRID = HashGridConfig(n_levels=8, log2_hashmap_size=14, finest_resolution=256, backend="torch")


def test_hash_grid_on_cuda_matches_cpu_values_and_gradients():
    enc = HashGridEncoding(GRID)
    x = torch.rand(4096, 3) * 2 - 1
    out_cpu = enc(x)
    out_cpu.square().sum().backward()
    grads_cpu = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc_gpu = enc.cuda()
    out_gpu = enc_gpu(x.cuda())
    out_gpu.square().sum().backward()
    assert torch.allclose(out_gpu.cpu(), out_cpu, atol=1e-5)
    for a, p in zip(grads_cpu, enc_gpu.parameters()):
        assert torch.allclose(p.grad.cpu(), a, atol=1e-4)


def test_renderer_on_cuda_matches_cpu():
    field = NeRFField(FieldConfig(grid=GRID, mlp_precision="fp32"))  # the exact path ('auto' is bf16 on CUDA)
    renderer = Renderer(field, BackgroundMLP(), RendererConfig(num_coarse=32, num_fine=16))
    origins, dirs = orbit_cameras(1).rays(16, 16)
    options = RayOptions(background=torch.ones(3), need_normals=True)
    cpu = renderer(origins[0], dirs[0], options)
    gpu = renderer.cuda()(origins[0].cuda(), dirs[0].cuda(), options)
    for key in ("image", "depth", "opacity", "normals"):
        assert torch.allclose(gpu[key].cpu(), cpu[key], atol=1e-4), key
    # z-variance divides by the opacity: compare it where a ray hits something.
    hit = cpu["opacity"] > 0.05
    assert hit.sum() > 10
    assert torch.allclose(gpu["z_variance"].cpu()[hit], cpu["z_variance"][hit], rtol=1e-3, atol=1e-4)


def test_bf16_field_mlps_on_cuda_stay_close_to_fp32_in_training_and_are_fp32_outside():
    """field.mlp_precision='bf16' on CUDA: a training render and the grid's gradients match fp32 up to bf16 rounding;
    a render outside training (validation, evaluation) runs the MLPs in fp32, so it equals the fp32 field's."""
    exact = fitted_field(FieldConfig(grid=GRID, blob_radius=0.6, mlp_precision="fp32"), 2.0)  # a blob that covers much of the image
    fast = precision_twin(exact, "bf16")
    background = BackgroundMLP()
    origins, dirs = (t[0].cuda() for t in orbit_cameras(1).rays(16, 16))
    outputs = {}
    for name, field in (("fp32", copy.deepcopy(exact).cuda()), ("bf16", fast.cuda())):
        renderer = Renderer(field, background, RendererConfig(num_coarse=32, num_fine=16)).cuda()
        gen = torch.Generator("cuda").manual_seed(0)  # the same jitter and fine draws for both
        out = renderer(origins, dirs, RayOptions(training=True, background=torch.ones(3), generator=gen))
        out["image"].square().sum().backward()
        grads = torch.cat([t.grad.flatten() for t in field.encoding.tables]).cpu()
        with torch.no_grad():
            evaluation = renderer(origins, dirs, RayOptions(background=torch.ones(3)))["image"].cpu()
        outputs[name] = (out["image"].detach().cpu(), out["opacity"].detach().cpu(), grads, evaluation)
    image, opacity, grads, evaluation = outputs["fp32"]
    assert opacity.mean() > 0.2
    assert (outputs["bf16"][0] - image).abs().max() > 1e-6  # bf16 really ran
    assert (outputs["bf16"][0] - image).abs().max() < 2e-2
    assert torch.nn.functional.cosine_similarity(outputs["bf16"][2], grads, dim=0) > 0.999
    torch.testing.assert_close(outputs["bf16"][3], evaluation, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["hifa", "dreamfusion"])
def test_training_on_cuda_runs_the_prior_in_half_precision(models, tmp_path, method):
    trainer = Trainer(tiny_cuda_config(models, method), tmp_path / method, progress=False)
    assert trainer.prior.dtype == torch.float16 and next(trainer.prior.unet.parameters()).dtype == torch.float16
    trainer.train()
    assert trainer.step == 6
    assert all(p.is_cuda and p.dtype == torch.float32 for p in trainer.renderer.parameters())  # the field stays fp32
    assert all(torch.isfinite(p).all() for p in trainer.renderer.parameters())
    assert all(v == v for row in trainer.log_rows for k, v in row.items() if isinstance(v, float))  # no NaN logged


def test_a_cuda_training_s_weights_load_on_a_cpu_machine(models, tmp_path):
    """weights.pt of a CUDA run (what DVC versions) holds CPU tensors and gives the same renderer as its checkpoint."""
    pytest.importorskip("mlflow", reason="`hifa train` imports the tracker (mlflow is a dependency; the GPU machine here lacks it)")
    from hifa.run_folder import CHECKPOINT_FILE, load_run
    from hifa.training import run_training

    run = tmp_path / "run"
    run_training(tiny_cuda_config(models, "dreamfusion", extra=["iterations=3", "mesh.resolution=32"]), run, progress=False)
    weights = torch.load(run / "weights.pt", weights_only=True)
    assert all(not t.is_cuda for t in weights["renderer"].values())
    _, from_weights, step = load_run(run, "cpu")
    (run / "weights.pt").unlink()
    _, from_checkpoint, _ = load_run(run, "cpu")  # the EMA applied from the checkpoint, as before weights.pt
    assert step == 3 and (run / CHECKPOINT_FILE).is_file()
    a, b = from_weights.state_dict(), from_checkpoint.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_on_cuda_restores_the_exact_state(models, tmp_path):
    """Two resumes of one checkpoint take the same next step (forward and RNG restored exactly).

    Comparing with an uninterrupted run is left to the CPU test: on CUDA the hash grid's
    index_add backward accumulates in a nondeterministic order and Adan's normalised update
    amplifies those last-bit differences, so two uninterrupted runs already differ.
    """
    import shutil

    config = tiny_cuda_config(models, extra=["prior.precision=float32"])
    torch.backends.cudnn.deterministic = True
    Trainer(config, tmp_path / "a", progress=False).train(until=3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    rows = []
    for name in ("a", "b"):
        trainer = Trainer(config, tmp_path / name, progress=False)
        trainer.train(until=4)
        assert trainer.step == 4
        rows.append(trainer.log_rows[-1])
    assert rows[0]["step"] == rows[1]["step"] == 4
    for key in rows[0].keys() - {"time_s", "grad_norm"}:
        assert rows[0][key] == pytest.approx(rows[1][key], rel=1e-5, nan_ok=True), key
    assert rows[0]["grad_norm"] == pytest.approx(rows[1]["grad_norm"], rel=1e-3)


def test_fast_paths_on_cuda_match_the_pytorch_one_pass_render():
    """Triton grid (auto on CUDA) + checkpointed chunks + occupancy skipping vs the pure-PyTorch one-pass render, same draws."""
    from hifa.occupancy import OccupancyConfig
    from tests.test_renderer_fast import render_with_grads

    grid = HashGridConfig(n_levels=8, log2_hashmap_size=14, finest_resolution=256, backend="torch")
    torch.manual_seed(0)
    reference = Renderer(NeRFField(FieldConfig(grid=grid, mlp_precision="fp32")), BackgroundMLP(), RendererConfig(num_coarse=32, num_fine=16)).cuda()
    fast_config = RendererConfig(num_coarse=32, num_fine=16, checkpoint_chunk_rays=100, occupancy=OccupancyConfig(resolution=32))
    fast_field = FieldConfig(grid=HashGridConfig(**{**grid.__dict__, "backend": "auto"}), mlp_precision="fp32")
    fast = Renderer(NeRFField(fast_field), BackgroundMLP(), fast_config).cuda()
    fast.load_state_dict(reference.state_dict())
    assert fast.field.encoding.uses_triton(torch.rand(2, 3, device="cuda")) or fast.field.encoding.uses_tcnn(torch.device("cuda"))
    assert fast.occupancy.occupancy() == 1.0  # a fresh grid: every cell occupied, so skipping must change nothing
    origins, dirs = (t[0].cuda() for t in orbit_cameras(1).rays(16, 16))
    options = lambda: RayOptions(training=True, background=torch.ones(3, device="cuda"), generator=torch.Generator("cuda").manual_seed(3))  # noqa: E731
    ref_out, ref_grad = render_with_grads(reference, origins, dirs, options())
    out, grad = render_with_grads(fast, origins, dirs, options())
    for key in ("image", "depth", "opacity", "weights", "z_vals", "pdf"):
        assert torch.allclose(out[key], ref_out[key], atol=1e-4), key
    assert torch.allclose(grad, ref_grad, atol=1e-4, rtol=1e-3)


def test_oracle_prior_on_cuda_matches_cpu():
    """The oracle's per-device banks: eps and the positive's disparity on CUDA equal the CPU's, on a repeat call too."""
    from types import SimpleNamespace

    from hifa.guidance.oracle import OracleConfig, OraclePrior, SceneBank, catalogue_entry

    name, k, size = catalogue_entry("a green torus").name, 24, 16
    gen = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(k, 3, generator=gen), dim=-1)
    bank = SceneBank(name, directions, torch.rand(k, 3, size, size, generator=gen), torch.rand(k, size, size, generator=gen))
    uncond = torch.rand(40, 3, size, size, generator=gen)

    class GivenBanks(OraclePrior):  # banks given, not ray-cast: the math and the device caches are under test
        def _uncond_images(self) -> torch.Tensor:
            return uncond

    oracle = GivenBanks(OracleConfig(resolution=size, views=k, uncond_views_per_scene=6), scenes=[SimpleNamespace(name=name)])
    oracle._banks[name] = bank
    cams = orbit_cameras(2, polar_deg=60.0, radius=oracle.config.radius, fovy_deg=oracle.config.fovy_deg, start_azimuth_deg=40.0)
    cond = oracle.conditions("a green torus", cams, "perpneg")
    handles = [cond.uncond, cond.positive, *cond.negatives]
    x_t, t = torch.rand(2, 3, size, size, generator=gen), torch.tensor([150, 600])
    cpu = oracle.predict_eps(x_t, t, handles)
    cpu_disparity = oracle.last_disparity
    assert cpu_disparity.abs().sum() > 0
    for _ in range(2):
        gpu = oracle.predict_eps(x_t.cuda(), t.cuda(), handles)
        assert oracle.last_disparity.is_cuda
        torch.testing.assert_close(oracle.last_disparity.cpu(), cpu_disparity, atol=1e-5, rtol=1e-4)
        for a, b in zip(cpu, gpu):
            assert b.is_cuda
            torch.testing.assert_close(b.cpu(), a, atol=1e-5, rtol=1e-4)


def test_head_on_mesh_colours_and_texture_on_cuda_match_cpu():
    """The mesh step's colour (composited along -n) and its baked texture from a CUDA field equal the CPU ones."""
    import numpy as np

    from hifa.mesh import albedo_colours, surface_albedo
    from hifa.texture import bake_texture

    field = fitted_field(FieldConfig(grid=GRID, mlp_precision="fp32"), spread=1.0)
    gen = np.random.default_rng(0)
    normals = gen.normal(size=(512, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points = 0.4 * normals + gen.normal(scale=0.02, size=(512, 3))
    cpu = surface_albedo(field, points, normals, depth=0.1)
    gpu_field = copy.deepcopy(field).cuda()
    gpu = surface_albedo(gpu_field, points, normals, depth=0.1)
    assert np.allclose(gpu, cpu, atol=1e-4) and cpu.std() > 1e-3
    square = np.array([[-0.5, -0.5, 0.3], [0.5, -0.5, 0.3], [0.5, 0.5, 0.3], [-0.5, 0.5, 0.3]])
    faces, uvs = np.array([[0, 1, 2], [0, 2, 3]]), np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    up = np.tile([0.0, 0.0, 1.0], (4, 1))
    texture_cpu, _ = bake_texture(albedo_colours(field, 0.1), square, up, faces, uvs, 32)
    texture_gpu, _ = bake_texture(albedo_colours(gpu_field, 0.1), square, up, faces, uvs, 32)
    assert np.allclose(texture_gpu, texture_cpu, atol=1e-4)


def test_host_noise_reaches_the_gpu_unchanged_without_a_stream_sync():
    """hifa.transfer.to_device: pinned, non-blocking copies queued behind busy GPU work give the host's values,
    with no synchronising copy, while other pinned blocks come and go before the copies have run."""
    from hifa.transfer import to_device

    busy = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    moved = []
    torch.cuda.set_sync_debug_mode("error")  # a synchronising copy raises
    try:
        for i in range(3):
            busy = busy @ busy / 64  # queued work the copies wait behind
            moved.append(to_device(torch.randn(4, 4, 64, 64, generator=torch.Generator().manual_seed(i)), "cuda"))
            torch.zeros(4, 4, 64, 64).pin_memory().fill_(float("nan"))  # a freed pinned block must not be one still in flight
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for i, tensor in enumerate(moved):
        assert torch.equal(tensor.cpu(), torch.randn(4, 4, 64, 64, generator=torch.Generator().manual_seed(i)))
