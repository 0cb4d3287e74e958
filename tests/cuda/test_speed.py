"""The CUDA speed options against the plain paths on small inputs: the fast set through the trainer, its host waits,
the compiled render math, the prior's and depth model's compile modes, Adan's Triton pass (skipped without a GPU)."""

import pytest
import torch

from hifa.trainer import Trainer
from tests.cuda.world import requires_cuda, tiny_cuda_config

pytestmark = requires_cuda


FAST_SET = ["prior.compile=true", "prior.compile_mode=reduce-overhead", "prior.compile_encoder=true", "depth.compile=true",
            "renderer.occupancy.resolution=16", "renderer.compile=true", "prior.vae_attention=math"]


@pytest.mark.parametrize("graphs", [[], ["prior.decoder_compile_mode=reduce-overhead", "depth.compile_mode=reduce-overhead"],
                                    ["overlap_steps=true"]], ids=["fast-set", "decoder-and-depth-graphs-too", "overlapped-steps"])
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
    assert scale.good_steps + scale.overflows == 4


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
    end = next((i for i, site in enumerate(sites) if site[0] == "step_values.py" and ".cpu()" in site[2]), None)  # the logged values
    assert end is not None, sites
    assert all(name == "renderer.py" and "nonzero" in line for name, _, line in sites[:end]), sites[:end]
    assert len(sites[:end]) == 2, sites[:end]  # coarse and fine samples


def test_an_overlapped_fast_set_step_waits_for_the_gpu_nowhere(models, tmp_path):
    """overlap_steps: the grid's samples compact into fixed-size batches, the NaN guard gates Adan's Triton pass on the
    device and the step's values are read during the next step, so the host queues a whole step without a wait."""
    import warnings
    from pathlib import Path

    config = tiny_cuda_config(models, extra=["iterations=6", *FAST_SET, "random_background_rate=0", "overlap_steps=true"])
    trainer = Trainer(config, tmp_path / "overlap", progress=False)
    for step in (1, 2, 3):  # compiles, CUDA-graph recording, the sample budget's first counts
        trainer.training_step(step)
    torch.cuda.synchronize()
    assert trainer.renderer.budget.counts and trainer.optimizer._kernel_gates()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            (row,) = trainer.training_step(4)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = [(Path(w.filename).name, w.lineno) for w in caught if "synchroniz" in str(w.message)]
    assert sites == [], sites
    assert row["step"] == 3 and "skipped" not in row
    assert [r["step"] for r in trainer.flush()] == [4] and trainer.skipped_steps == 0


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


@pytest.mark.parametrize("layout", ["vit", "hybrid"])
@pytest.mark.parametrize("compile,mode", [(False, "default"), (True, "default"), (True, "reduce-overhead")], ids=["eager", "compiled", "cuda-graphs"])
def test_depth_estimator_on_cuda_preprocesses_on_the_gpu_and_matches_cpu(models, hybrid_dpt, layout, compile, mode):
    """DPT on CUDA: the processor's resize and normalisation run on the GPU, within a level of the CPU's on a
    render-like smooth image, and the (optionally compiled) model gives the CPU model's output on the same pixels,
    in both layouts: the plain ViT, and the default model's hybrid (a BiT stem with weight-standardised convolutions).

    The resize rounds differently on the two devices (torchvision resizes a uint8 image in 8 bits on the CPU
    and in float on CUDA): on smooth images at most 1 level apart, 0.16 on average (the float route run on
    the CPU, six seeds). The model runs in fp32 here: the tiny random DPT's disparities are ~1e-10, below
    fp16's range (the fp16 model runs in the training tests)."""
    from hifa.depth import DPTDepthEstimator

    dpt = models[1] if layout == "vit" else hybrid_dpt
    cpu = DPTDepthEstimator(str(dpt), device="cpu")
    gpu = DPTDepthEstimator(str(dpt), device="cuda", compile=compile, compile_mode=mode)
    assert gpu.on_device and gpu.dtype == torch.float16
    gpu.model.float()
    gpu.dtype = torch.float32
    cpu.model.half().float()  # the GPU model's weights were loaded in fp16: the reference gets the same rounding
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


def test_gated_adan_on_cuda_runs_every_tensor_through_the_triton_pass_and_a_false_gate_changes_nothing():
    """overlap_steps' optimiser step: all tensors, small ones too, through the gated Triton pass; against Adan's foreach
    step over 12 steps, with a NaN step gated out (and its count taken back) in the middle."""
    from hifa.optim import build_adan

    torch.manual_seed(0)
    start = [torch.randn(s, device="cuda") for s in ((70000, 2), (33, 32), (7,))]
    grads = [[torch.randn(t.shape, device="cuda") * (100.0 if i % 5 == 3 else 0.1) for t in start] for i in range(12)]
    runs = {}
    for gated in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = build_adan([{"params": params[:1], "lr": 5e-2}, {"params": params[1:], "lr": 5e-3}], lr=5e-3, fused=gated)
        for i, gs in enumerate(grads):
            if gated and i == 6:
                for p in params:
                    p.grad = torch.full_like(p, float("nan"))
                before = [p.detach().clone() for p in params]
                opt.gated_step(torch.tensor(False, device="cuda"))
                assert all(torch.equal(a, b) for a, b in zip(before, params))
                opt.uncount_step()
            for p, g in zip(params, gs):
                p.grad = g.clone()
            if gated and i > 0:
                assert opt._kernel_gates()
                opt.gated_step(torch.tensor(True, device="cuda"))
            else:
                opt.step()
        runs[gated] = params
    for a, b in zip(runs[True], runs[False]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
