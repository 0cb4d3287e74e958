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
from hifa.training import resolve_config
from tests.field_twins import fitted_field, precision_twin
from tests.tinyworld import build_tiny_dpt, build_tiny_stable_diffusion

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
GRID = HashGridConfig(n_levels=8, log2_hashmap_size=14, finest_resolution=256, backend="torch")


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 matmuls and convolutions without TF32 (cuDNN's default allows it), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return build_tiny_stable_diffusion(root / "sd"), build_tiny_dpt(root / "dpt")


def tiny_cuda_config(models, method="hifa", extra=()):
    sd, dpt = models
    overrides = [
        "iterations=6", "resolution=32", "renderer.num_coarse=16", "renderer.num_fine=8", "checkpoint_every=3", "val_every=3",
        "val_views=1", "val_resolution=16", f"depth.model={dpt}", "tracking.enabled=false", "field.grid.n_levels=4",
        "field.grid.log2_hashmap_size=12", "field.grid.finest_resolution=64", "device=cuda", "log_every=1", *extra,
    ]
    return resolve_config(method, "a corgi", f"stable-diffusion:{sd}", overrides=overrides)


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


FAST_SET = ["prior.compile=true", "prior.compile_mode=reduce-overhead", "prior.compile_encoder=true", "depth.compile=true",
            "renderer.occupancy.resolution=16", "renderer.compile=true", "prior.vae_attention=math"]


@pytest.mark.parametrize("graphs", [[], ["prior.decoder_compile_mode=reduce-overhead", "depth.compile_mode=reduce-overhead"]],
                         ids=["fast-set", "decoder-and-depth-graphs-too"])
def test_training_on_cuda_with_the_fast_set(models, tmp_path, graphs):
    """The README's fast set, plus renderer.compile and the VAE's plain attention (and the VAE decoder and depth model
    as CUDA graphs too), through the trainer in fp16: no CUDA graph output is read after the next replay, and the
    compiled encoder's backward runs under the gradient scale."""
    config = tiny_cuda_config(models, extra=["iterations=4", *FAST_SET, *graphs])
    trainer = Trainer(config, tmp_path / "graphs", progress=False)
    assert trainer.prior.dtype == torch.float16
    trainer.train()
    assert trainer.step == 4 and trainer.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in trainer.renderer.parameters())
    scale = trainer.prior.grad_scale
    assert not scale._pending and scale.good_steps + scale.overflows == 4


def test_a_fast_set_step_waits_for_the_gpu_only_at_the_grid_s_compaction_before_its_end(models, tmp_path):
    """Mid-step the host waits only for the occupancy grid's sample compaction (early in the render, little queued);
    its next wait is the end-of-step read of the logged values, so it queues the losses and the backward behind the
    networks."""
    import linecache
    import warnings
    from pathlib import Path

    # No solid backgrounds: their first draw compiles a second graph of the render's math, inside the watched step.
    trainer = Trainer(tiny_cuda_config(models, extra=["iterations=4", *FAST_SET, "random_background_rate=0"]), tmp_path / "waits", progress=False)
    for step in (1, 2):  # compiles and CUDA-graph recording
        trainer.training_step(step)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.training_step(3)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = [(Path(w.filename).name, w.lineno, linecache.getline(w.filename, w.lineno).strip())
             for w in caught if "synchroniz" in str(w.message)]
    end = next((i for i, site in enumerate(sites) if site[0] == "trainer.py" and ".tolist()" in site[2]), None)  # the logged values
    assert end is not None, sites
    assert all(name == "renderer.py" and "nonzero" in line for name, _, line in sites[:end]), sites[:end]
    assert len(sites[:end]) == 2, sites[:end]  # coarse and fine samples


def test_compiled_render_and_loss_math_on_cuda_match_eager(models, tmp_path):
    """renderer.compile on CUDA (Triton kernels from inductor): the loss terms and gradients of eager, same draws."""
    results = []
    for compiled in ("false", "true"):
        config = tiny_cuda_config(models, extra=["prior.precision=float32", "renderer.occupancy.resolution=16", "field.mlp_precision=fp32",
                                                 f"renderer.compile={compiled}"])
        trainer = Trainer(config, tmp_path / compiled, progress=False)
        terms, _ = trainer.loss_terms(1)
        sum(terms.values()).backward()
        results.append(({k: v.item() for k, v in terms.items()}, [p.grad.clone() for p in trainer.renderer.parameters() if p.grad is not None]))
        trainer.training_step(2)  # and a whole step runs
    (eager_terms, eager_grads), (terms, grads) = results
    assert terms.keys() == eager_terms.keys()
    for key in terms:
        assert terms[key] == pytest.approx(eager_terms[key], rel=1e-3, abs=1e-9), key
    for g, e in zip(grads, eager_grads, strict=True):
        assert torch.allclose(g, e, rtol=1e-3, atol=1e-4 * e.abs().max().item()), (g - e).abs().max()


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


# Each case compiles its own prior, so the list is kept short: plain compile is part of 'compile-encoder', and the
# options together are 'everything'.
@pytest.mark.parametrize("options", [{"channels_last": True}, {"compile": True, "compile_mode": "reduce-overhead"},
                                     {"compile": True, "compile_encoder": True}, {"vae_attention": "math"},
                                     {"compile": True, "decoder_compile_mode": "reduce-overhead"},
                                     {"channels_last": True, "compile": True, "compile_mode": "reduce-overhead", "compile_encoder": True,
                                      "vae_attention": "math", "decoder_compile_mode": "reduce-overhead"}],
                         ids=["channels_last", "compile-cuda-graphs", "compile-encoder", "vae-math", "decoder-cuda-graphs", "everything"])
def test_prior_speed_options_on_cuda_give_the_same_noise_prediction(models, options):
    """channels_last / torch.compile (CUDA graphs too) of the UNet and the VAE / the VAE's plain attention: same epsilon, decode and
    encoder gradient as the plain prior."""
    from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior

    sd, _ = models
    plain = StableDiffusionPrior(StableDiffusionConfig(model=str(sd), precision="float32"))
    fast = StableDiffusionPrior(StableDiffusionConfig(model=str(sd), precision="float32", **options))
    gen = torch.Generator("cuda").manual_seed(0)
    size = plain.image_size // plain.vae_factor
    handles = [plain.embed("a corgi").expand(2, -1, -1), plain.embed("").expand(2, -1, -1)]
    # Three calls on new inputs: CUDA graph trees record on an early call and replay on later ones.
    for t in ([500, 900], [20, 300], [999, 1]):
        latents = torch.randn(2, 4, size, size, device="cuda", generator=gen)
        t = torch.tensor(t, device="cuda")
        for a, b in zip(plain.predict_eps(latents, t, handles), fast.predict_eps(latents, t, handles)):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(fast.decode(latents), plain.decode(latents), atol=1e-4, rtol=1e-3)
    images = torch.rand(1, 3, plain.image_size, plain.image_size, device="cuda", generator=gen)
    encoded = []
    for prior in (plain, fast):
        x = images.clone().requires_grad_(True)
        torch.manual_seed(1)  # the posterior sample's noise
        z = prior.encode(x)
        (z * torch.linspace(-1, 1, z.numel(), device="cuda").view_as(z)).sum().backward()
        encoded.append((z.detach(), x.grad))
    for a, b in zip(*encoded):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("compile,mode", [(False, "default"), (True, "default"), (True, "reduce-overhead")], ids=["eager", "compiled", "cuda-graphs"])
def test_depth_estimator_on_cuda_preprocesses_on_the_gpu_and_matches_cpu(models, compile, mode):
    """DPT on CUDA: the processor's resize and normalisation run on the GPU, within a level of the CPU's on a
    render-like smooth image, and the (optionally compiled) model gives the CPU model's output on the same pixels.

    The resize rounds differently on the two devices (torchvision resizes a uint8 image in 8 bits on the CPU
    and in float on CUDA): on smooth images at most 1 level apart, 0.16 on average (the float route run on
    the CPU, six seeds). The model runs in fp32 here: the tiny random DPT's disparities are ~1e-10, below
    fp16's range (the fp16 model runs in the training tests)."""
    from hifa.depth import DPTDepthEstimator

    _, dpt = models
    cpu = DPTDepthEstimator(str(dpt), device="cpu")
    gpu = DPTDepthEstimator(str(dpt), device="cuda", compile=compile, compile_mode=mode)
    assert gpu.on_device and gpu.dtype == torch.float16
    gpu.model.float()
    gpu.dtype = torch.float32
    for seed in (0, 1):  # a compiled model's second call too
        coarse = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
        images = torch.nn.functional.interpolate(coarse, size=(48, 48), mode="bilinear", align_corners=False)
        quantised = (images * 255).to(torch.uint8)
        pixels = cpu.processor(images=list(quantised), return_tensors="pt")["pixel_values"]
        on_gpu = gpu.processor(images=list(quantised.cuda()), return_tensors="pt", device="cuda")["pixel_values"]
        assert on_gpu.is_cuda
        levels = (on_gpu.cpu() - pixels).abs() * 127.5  # normalised to [-1, 1]: one 8-bit level is 1/127.5
        assert float(levels.max()) <= 2.0 and float(levels.mean()) < 0.5
        with torch.no_grad():
            ref = cpu.model(pixel_values=on_gpu.cpu()).predicted_depth
            out = gpu.model(pixel_values=on_gpu).predicted_depth
        scale = float(ref.abs().max())
        assert scale > 0
        torch.testing.assert_close(out.cpu() / scale, ref / scale, atol=1e-3, rtol=0)
        estimate = gpu.estimate(images.cuda(), size=(24, 24))
        assert estimate.is_cuda and estimate.shape == (1, 24, 24) and torch.isfinite(estimate).all()


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


def test_adan_on_cuda_with_the_triton_pass_matches_adan_s_foreach_step():
    """FusedAdan on CUDA: the large tensors through hifa.adan_triton, the small ones through Adan's foreach step, against
    Adan's foreach step for all: 30 steps, clipping active in some."""
    from hifa import adan_triton
    from hifa.optim import build_adan

    torch.manual_seed(0)
    shapes = [(adan_triton.MIN_ELEMENTS + 5, 2), (33, 32), (7,)]
    start = [torch.randn(s, device="cuda") for s in shapes]
    runs = {}
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = build_adan([{"params": params[:1], "lr": 5e-2}, {"params": params[1:], "lr": 5e-3}], lr=5e-3, fused=fused)
        generator = torch.Generator("cuda").manual_seed(1)
        for step in range(30):
            scale = 100.0 if step % 7 == 3 else 0.1
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator, device="cuda") * scale
            opt.step()
        runs[fused] = params, opt.state_dict()
    (fast, fast_state), (slow, slow_state) = runs[True], runs[False]
    for a, b, t in zip(fast, slow, start):
        assert not torch.equal(a, t)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for key, state in slow_state["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(fast_state["state"][key][name], value, rtol=1e-5, atol=1e-6)


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
