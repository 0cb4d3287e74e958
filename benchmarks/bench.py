"""Speed benchmarks: hash grid, renderer (and its fast paths), guidance, one training step per preset, memory.

Usage: python benchmarks/bench.py [--device auto|cpu|cuda] [--quick] [--out benchmarks/results]
On CUDA the sizes are the presets' real ones (SD 2.1-base architecture with random weights,
512x512 renders); on CPU they are tiny and the figures that travel between machines are the
ratios. Writes bench-<device>.json and bench-<device>.md; a section that fails (for example out
of memory) is recorded with its error instead of stopping the run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reconstruct import machine  # noqa: E402
from benchmarks.summary import markdown, ratios  # noqa: E402
from hifa.io import write_bytes_atomic, write_json_atomic  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int, repeat: int) -> float:
    """Median seconds per call of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def peak_memory(device: torch.device, reset: bool = False) -> float | None:
    if device.type != "cuda":
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def section(results: dict, name: str, fn: Callable[[], dict]) -> None:
    """Run one benchmark section, recording its figures or its error."""
    print(f"bench: {name} ...", flush=True)
    started = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 - recorded, the next section still runs
        results[name] = {"error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}"}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    results[name]["wall_s"] = round(time.perf_counter() - started, 1)  # set-up and compiles included
    print(f"bench: {name}: {results[name]}", flush=True)


def bench_encoding(device: torch.device, points: int, warmup: int, repeat: int) -> dict:
    from hifa.encoding import HashGridConfig, HashGridEncoding, tcnn_available
    from hifa.triton_support import triton_available

    out = {"points": points}
    backends = ["torch", "cpp"] if device.type == "cpu" else ["torch"] + (["triton"] if triton_available() else []) + (["tcnn"] if tcnn_available() else [])
    for backend in backends:
        enc = HashGridEncoding(HashGridConfig(backend=backend)).to(device)
        x = torch.rand(points, 3, device=device) * 2 - 1

        def step() -> None:
            enc(x).square().sum().backward()

        out[f"{backend}_points_per_s"] = points / timed(step, device, warmup, repeat)
    return out


def bench_encoding_rays(device: torch.device, rays: int, samples: int, warmup: int, repeat: int) -> dict:
    """Triton grid forward + backward on samples ordered along rays (the renderer's layout)."""
    from hifa.encoding import HashGridConfig, HashGridEncoding

    enc = HashGridEncoding(HashGridConfig(backend="triton")).to(device)
    gen = torch.Generator(device).manual_seed(0)
    origins = torch.tensor([0.0, 0.0, 3.2], device=device).expand(rays, 3)
    dirs = torch.nn.functional.normalize(torch.randn(rays, 3, device=device, generator=gen) * 0.15 + torch.tensor([0.0, 0.0, -1.0], device=device), dim=-1)
    t = torch.sort(2.2 + 2.0 * torch.rand(rays, samples, device=device, generator=gen), dim=-1).values
    points = (origins[:, None] + dirs[:, None] * t[..., None]).reshape(-1, 3)

    def step() -> None:
        enc(points).square().sum().backward()

    return {"points": points.shape[0], "points_per_s": points.shape[0] / timed(step, device, warmup, repeat)}


def saved_for_backward(fn: Callable[[], object]) -> float:
    """MiB that autograd keeps for backward during `fn` (a checkpointed region keeps only its outputs)."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0] / 2**20


def bench_render(device: torch.device, preset_name: str, rays: int, warmup: int, repeat: int, checkpoint_chunk: int = 0, occupancy: int = 0,
                 backend: str = "auto", mlp_precision: str = "fp32") -> dict:
    """Forward + backward of a training render; optionally checkpointed chunks, an occupancy grid (updated once), a grid backend, bf16 MLPs."""
    from hifa.occupancy import OccupancyConfig
    from hifa.presets import preset
    from hifa.regularisers import z_entropy_loss
    from hifa.renderer import RayOptions
    from hifa.run_setup import build_renderer

    config = preset(preset_name)
    fast = replace(config.renderer, checkpoint_chunk_rays=checkpoint_chunk, occupancy=OccupancyConfig(resolution=occupancy))
    field = replace(config.field, grid=replace(config.field.grid, backend=backend), mlp_precision=mlp_precision)
    renderer = build_renderer(replace(config, renderer=fast, field=field)).to(device)
    gen = torch.Generator(device).manual_seed(0)
    origins = torch.tensor([[0.0, 0.0, 3.2]], device=device).expand(rays, 3).contiguous()
    dirs = torch.nn.functional.normalize(torch.randn(rays, 3, device=device) * 0.05 + torch.tensor([0.0, 0.0, -1.0], device=device), dim=-1)
    options = RayOptions(training=True, background=torch.ones(3, device=device), generator=gen)
    extra = {}
    samples = config.renderer.num_coarse + config.renderer.num_fine
    if renderer.occupancy is not None:  # the fresh field's density blob: most of each ray is empty
        renderer.occupancy.update(renderer.field, gen)
        points: list[int] = []
        field_call = renderer.field.density_features
        renderer.field.density_features = lambda p, *args: points.append(len(p)) or field_call(p, *args)
        with torch.no_grad():
            renderer(origins, dirs, options)
        del renderer.field.density_features
        extra = {"grid_resolution": occupancy, "occupied_cells": renderer.occupancy.occupancy(), "field_points_fraction": sum(points) / (rays * samples)}
    if checkpoint_chunk:
        extra["checkpoint_chunk_rays"] = checkpoint_chunk
    extra["grid_backend"] = backend
    extra["mlp_precision"] = mlp_precision

    def step() -> None:
        out = renderer(origins, dirs, options)
        # A per-sample term too, as HiFA's regularisers: training keeps the per-sample outputs for backward.
        (out["image"].sum() + out["z_variance"].sum() + z_entropy_loss(out["weights"], out["deltas"])).backward()

    peak_memory(device, reset=True)
    seconds = timed(step, device, warmup, repeat)
    peak = peak_memory(device)
    return {"rays": rays, "samples_per_ray": samples, "rays_per_s": rays / seconds, "peak_gib": peak,
            "saved_mib": saved_for_backward(step), **extra}


def bench_guidance(device: torch.device, model: str, resolution: int, warmup: int, repeat: int, channels_last: bool = False, compile_unet: bool = False,
                   unet_mode: str | None = None) -> dict:
    """Guidance step times (SDS, HiFA K = 1, 2, 4); `unet_mode` compiles the UNet in that torch.compile mode (an experiment)."""
    from hifa.cameras import orbit_cameras
    from hifa.guidance.guidance import Guidance, GuidanceConfig
    from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior

    prior = StableDiffusionPrior(StableDiffusionConfig(model=model, channels_last=channels_last, compile=compile_unet))
    if unet_mode is not None:
        prior.unet.compile(mode=unet_mode)
    camera = orbit_cameras(1)
    image = torch.rand(1, 3, resolution, resolution, device=device, requires_grad=True)
    out: dict = {"dtype": str(prior.dtype), "prior_image_size": prior.image_size, "channels_last": channels_last, "compile": compile_unet, "unet_mode": unet_mode}
    gen = torch.Generator().manual_seed(0)
    variants = [("sds", GuidanceConfig(method="sds", view_mode="suffix", schedule="uniform", denoising_steps=1))]
    variants += [(f"hifa_k{k}", GuidanceConfig(method="hifa", denoising_steps=k)) for k in (1, 2, 4)]
    for name, cfg in variants:
        guidance = Guidance(prior, cfg)
        if name == "sds":  # the first call pays any torch.compile
            t0 = time.perf_counter()
            sum(guidance.loss(image, "a ladybug", camera, 1, 10_000, gen).terms.values()).backward()
            sync(device)
            out["first_call_s"] = time.perf_counter() - t0

        def step(guidance: Guidance = guidance) -> None:
            # Step 1 of the sqrt anneal is t = t_max, where K-step denoising runs all K UNet calls.
            terms = guidance.loss(image, "a ladybug", camera, 1, 10_000, gen).terms
            sum(terms.values()).backward()

        peak_memory(device, reset=True)
        out[f"{name}_ms"] = 1000 * timed(step, device, warmup, repeat)
        out[f"{name}_peak_gib"] = peak_memory(device)
    return out


@contextlib.contextmanager
def bench_trainer(preset_name: str, model: str, depth_model: str, overrides: list[str]) -> Iterator:
    """A Trainer for a preset on the given SD / DPT checkpoints (no tracking), in a throwaway run folder."""
    from hifa.trainer import Trainer
    from hifa.training import resolve_config

    config = resolve_config(preset_name, "a ladybug", f"stable-diffusion:{model}", overrides=["tracking.enabled=false", f"depth.model={depth_model}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        yield Trainer(config, Path(tmp), progress=False)


def bench_train_step(device: torch.device, preset_name: str, model: str, depth_model: str, overrides: list[str], warmup: int, repeat: int,
                     run_mean: int = 0) -> dict:
    """Median time of the trainer's first steps (sqrt anneal: t near t_max, all K UNet calls) and peak memory.

    `run_mean` > 0 also times that many steps at evenly spread points of the run (one per stratum): their
    mean estimates a whole run's step time, where the annealed t needs fewer than K denoising calls. Then the
    first steps again (`step_ms_after_run`): the t_max step with everything warm.
    """
    with bench_trainer(preset_name, model, depth_model, overrides) as trainer:
        counter = iter(range(1, 10_000))
        peak_memory(device, reset=True)
        seconds = timed(lambda: trainer.training_step(next(counter)), device, warmup, repeat)
        # The next steps back to back, one sync at the end, as a run takes them: a step may then queue behind the last
        # (overlap_steps), which the per-step times above, each waiting for the GPU to finish, cannot show.
        t0 = time.perf_counter()
        for _ in range(repeat):
            trainer.training_step(next(counter))
        sync(device)
        back_to_back = (time.perf_counter() - t0) / repeat
        trainer.flush()
        config = trainer.config
        out = {"resolution": config.resolution, "samples": config.renderer.num_coarse + config.renderer.num_fine, "step_ms": 1000 * seconds,
               "step_ms_back_to_back": 1000 * back_to_back, "peak_gib": peak_memory(device), "overrides": " ".join(overrides)}
        if run_mean:
            times = []
            for i in range(run_mean):
                step = 1 + int((i + 0.5) / run_mean * config.iterations)
                t0 = time.perf_counter()
                trainer.training_step(step)
                sync(device)
                times.append(time.perf_counter() - t0)
            out["run_mean_step_ms"] = 1000 * sum(times) / len(times)
            out["run_mean_steps_ms"] = [round(1000 * t, 1) for t in times]
            # The first measurement's steps again, now that every path has run (t near t_max): whether its steps
            # were slower than a warm one at that t (session 17: 121 ms there, 107 ms for stratum 0's 4 UNet calls).
            again = iter(range(warmup + 1, 10_000))
            out["step_ms_after_run"] = 1000 * timed(lambda: trainer.training_step(next(again)), device, 0, repeat)
        if trainer.renderer.occupancy is not None:
            out["occupied_cells"] = trainer.renderer.occupancy.occupancy()
        return out


def cuda_plan(device: torch.device, models: Path, warmup: int, repeat: int, out: Path) -> dict[str, Callable[[], dict]]:
    """Full-size sections, most important first (a --deadline cuts the tail)."""
    from benchmarks.profile_step import profile_train_step
    from benchmarks.sd_architecture import build_dpt_hybrid, build_sd21_base

    # Built on first use, once: `--only encoding` needs no checkpoint.
    sd = functools.cache(lambda: str(build_sd21_base(models / "sd21-base")))
    dpt = functools.cache(lambda: str(build_dpt_hybrid(models / "dpt-hybrid")))
    chunk, occ, comp = "renderer.checkpoint_chunk_rays=16384", "renderer.occupancy.resolution=64", "prior.compile=true"
    graphs = "prior.compile_mode=reduce-overhead"
    fp32 = "field.mlp_precision=fp32"  # the default, 'auto', runs the field's MLPs in bf16 on CUDA
    step = lambda p, over, mean=0: lambda: bench_train_step(device, p, sd(), dpt(), over, 2, 5, mean)  # noqa: E731 - steps are long: fewer repeats
    rays = 1 << 14
    enc, depthc = "prior.compile_encoder=true", "depth.compile=true"
    fast = [occ, comp, graphs]  # with enc and depthc: the README's fast set
    s15 = ["renderer.compile=true", "prior.vae_attention=math"]  # session 15's options, not measured on a GPU yet
    s16 = ["prior.decoder_compile_mode=reduce-overhead", "depth.compile_mode=reduce-overhead"]  # session 16's, the same
    overlap = "overlap_steps=true"  # session 18's: no host wait in a step (fixed-size sample batches, the guard on the device)
    plan: dict[str, Callable[[], dict]] = {
        # Issue 7's rows first: 'hifa-fast' with the README's fast set plus session 15's options (the render and loss
        # math compiled, the VAE's plain attention), with session 18's overlap_steps and without (on the same machine:
        # its only A/B), the profile that says where its host time goes (per phase) and whether a step still waits on
        # the host, 'hifa' with everything, with and without overlap_steps (run means over 16 / 8 strata), the VAE
        # decoder and the depth model as CUDA graphs too (no more launches one by one), channels_last on top (in
        # session 14 cuDNN converted NCHW tensors to NHWC and back around the compiled VAE's and depth model's
        # convolutions, 2.8 ms per step; this puts the UNet and the VAE in NHWC), the fast set alone, then each
        # option's share. Session 17's first row took 266 s with its compiles; later rows reuse most of them.
        "train_step_hifa-fast+occupancy+compile@cuda-graphs+encoder+depth+render+vae-math+overlap":
            step("hifa-fast", [*fast, enc, depthc, *s15, overlap], 16),
        "train_step_hifa-fast+occupancy+compile@cuda-graphs+encoder+depth+render+vae-math": step("hifa-fast", [*fast, enc, depthc, *s15], 16),
        "profile_hifa-fast_ms_per_step": lambda: profile_train_step(device, "hifa-fast", sd(), dpt(), [*fast, enc, depthc, *s15, overlap], out,
                                                                    "-fast-options"),
        "train_step_hifa+occupancy+compile@cuda-graphs+encoder+depth+render+vae-math+overlap": step("hifa", [*fast, enc, depthc, *s15, overlap], 8),
        "train_step_hifa+occupancy+compile@cuda-graphs+encoder+depth+render+vae-math": step("hifa", [*fast, enc, depthc, *s15], 8),
        "train_step_hifa-fast+occupancy+compile@cuda-graphs+encoder+depth+render+vae-math+decoder-depth-graphs":
            step("hifa-fast", [*fast, enc, depthc, *s15, *s16], 16),
        "train_step_hifa-fast+occupancy+compile@cuda-graphs+encoder+depth+render+vae-math+channels-last":
            step("hifa-fast", [*fast, enc, depthc, *s15, "prior.channels_last=true"], 16),
        "train_step_hifa-fast+occupancy+compile@cuda-graphs+encoder+depth": step("hifa-fast", [*fast, enc, depthc], 16),
        "train_step_hifa-fast+occupancy+compile@cuda-graphs+encoder+depth+render": step("hifa-fast", [*fast, enc, depthc, s15[0]], 16),
        "train_step_hifa-fast+occupancy+compile@cuda-graphs+encoder+depth+vae-math": step("hifa-fast", [*fast, enc, depthc, s15[1]], 16),
        "train_step_hifa+occupancy+compile@cuda-graphs+encoder+depth": step("hifa", [*fast, enc, depthc], 8),
        "train_step_hifa-fast+occupancy+compile@cuda-graphs": step("hifa-fast", fast, 16),
        "train_step_hifa+occupancy+compile": step("hifa", [occ, comp], 8),
        "train_step_hifa-fast+occupancy+compile@cuda-graphs+encoder": step("hifa-fast", [*fast, enc], 16),
        "train_step_hifa-fast+occupancy+compile@cuda-graphs+depth": step("hifa-fast", [*fast, depthc], 16),
        "train_step_hifa-fast+occupancy+compile": step("hifa-fast", [occ, comp], 16),
        "train_step_hifa": step("hifa", [], 8),
        "train_step_hifa+occupancy": step("hifa", [occ], 8),
        "train_step_hifa+occupancy+compile@cuda-graphs": step("hifa", [occ, comp, graphs], 8),
        # A bigger object fills more cells (a trained one, not the start's blob): how much of the grid's gain stays.
        "train_step_hifa+occupancy+compile@blob-0.5": step("hifa", [occ, comp, "field.blob_radius=0.5"], 8),
        "train_step_hifa@fp32-mlp": step("hifa", [fp32], 8),
        "guidance+compile@reduce-overhead": lambda: bench_guidance(device, sd(), 512, warmup, repeat, compile_unet=True, unet_mode="reduce-overhead"),
        "encoding_rays": lambda: bench_encoding_rays(device, 1 << 14, 192, warmup, repeat),
        # cuDNN converts every NCHW activation to NHWC (16 ms of a step in the H100 profile); channels_last was
        # slower before cuDNN autotuning was switched on.
        "guidance@channels_last": lambda: bench_guidance(device, sd(), 512, warmup, repeat, channels_last=True),
        "guidance": lambda: bench_guidance(device, sd(), 512, warmup, repeat),
        "profile_hifa_ms_per_step": lambda: profile_train_step(device, "hifa", sd(), dpt(), [], out),
        "train_step_hifa+compile": step("hifa", [comp]),
        "train_step_hifa-fast": step("hifa-fast", []),
        "train_step_hifa-fast+compile": step("hifa-fast", [comp]),
        "guidance+compile": lambda: bench_guidance(device, sd(), 512, warmup, repeat, compile_unet=True),
        "train_step_hifa+checkpoint": step("hifa", [chunk]),
        "train_step_hifa+checkpoint+occupancy": step("hifa", [chunk, occ]),
        "encoding": lambda: bench_encoding(device, 1 << 21, warmup, repeat),
        "render_hifa": lambda: bench_render(device, "hifa", rays, warmup, repeat),
        "render_hifa+occupancy": lambda: bench_render(device, "hifa", rays, warmup, repeat, occupancy=64),
        "render_hifa+bf16": lambda: bench_render(device, "hifa", rays, warmup, repeat, mlp_precision="bf16"),
        "render_hifa-fast": lambda: bench_render(device, "hifa-fast", rays, warmup, repeat),
        "train_step_dreamfusion": step("dreamfusion", []),
        "train_step_hifa+checkpoint@torch-grid": step("hifa", [chunk, "field.grid.backend=torch"]),
        # The rest of the README's knob table, and the render paths' ratios.
        "train_step_hifa+checkpoint4096": step("hifa", ["renderer.checkpoint_chunk_rays=4096"]),
        "train_step_hifa@384+checkpoint": step("hifa", [chunk, "resolution=384"]),
        "train_step_hifa@256": step("hifa", ["resolution=256"]),
        "render_hifa@torch-grid": lambda: bench_render(device, "hifa", rays, warmup, repeat, backend="torch"),
        "render_hifa+checkpoint": lambda: bench_render(device, "hifa", rays, warmup, repeat, checkpoint_chunk=rays // 4),
    }
    return plan


def cpu_plan(device: torch.device, models: Path, warmup: int, repeat: int, out: Path) -> dict[str, Callable[[], dict]]:
    """Tiny sections for a CPU (CI-sized); read the ratios."""
    from benchmarks.dispatch import dispatch_counts
    from tests.tinyworld import build_tiny_dpt, build_tiny_stable_diffusion

    sd = functools.cache(lambda: str(build_tiny_stable_diffusion(models / "tiny-sd")))
    dpt = functools.cache(lambda: str(build_tiny_dpt(models / "tiny-dpt")))
    small = ["resolution=32", "renderer.num_coarse=16", "renderer.num_fine=8", "field.grid.log2_hashmap_size=14", "field.grid.finest_resolution=256"]
    train = {"hifa": small, "hifa-fast": small[1:] + ["resolution=16"], "dreamfusion": small[1:] + ["resolution=16"],
             "hifa+checkpoint": small + ["renderer.checkpoint_chunk_rays=256"],
             "hifa-fast+render-compile": small[1:] + ["resolution=16", "renderer.compile=true"]}
    rays = 1 << 9
    plan: dict[str, Callable[[], dict]] = {
        "encoding": lambda: bench_encoding(device, 1 << 15, warmup, repeat),
        "render_hifa": lambda: bench_render(device, "hifa", rays, warmup, repeat),
        "render_hifa+checkpoint": lambda: bench_render(device, "hifa", rays, warmup, repeat, checkpoint_chunk=rays // 4),
        "render_hifa+occupancy": lambda: bench_render(device, "hifa", rays, warmup, repeat, occupancy=32),
        "render_hifa-fast": lambda: bench_render(device, "hifa-fast", rays, warmup, repeat),
        "guidance": lambda: bench_guidance(device, sd(), 64, warmup, repeat),
    }
    for name, over in train.items():
        plan[f"train_step_{name}"] = lambda p=name.split("+")[0], over=over: bench_train_step(device, p, sd(), dpt(), over, warmup, repeat)
    # The host's share of a GPU step: operator dispatches per phase (the counts do not depend on the size).
    tiny_fast = [*small[1:], "resolution=16", "renderer.occupancy.resolution=16"]
    plan["dispatches_hifa-fast+occupancy"] = lambda: dispatch_counts(device, "hifa-fast", sd(), dpt(), tiny_fast)
    plan["dispatches_hifa-fast+occupancy+render-compile"] = lambda: dispatch_counts(device, "hifa-fast", sd(), dpt(), [*tiny_fast, "renderer.compile=true"])
    return plan


def write_report(out: Path, device: torch.device, sections: dict) -> dict:
    """Write bench-<device>.{json,md} with what has run so far (a killed run keeps its finished sections)."""
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    report = {"device": device.type, "device_name": name, "machine": machine(), "sections": sections, "ratios": ratios(sections)}
    tag = "cuda" if cuda else "cpu"
    write_json_atomic(out / f"bench-{tag}.json", report)
    write_bytes_atomic(out / f"bench-{tag}.md", markdown(report).encode())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--models", default=None, help="folder for the random full-size checkpoints (CUDA)")
    parser.add_argument("--only", nargs="*", help="section names to run (default: all)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds after which no further section starts")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    torch.set_flush_denormal(True)  # as `hifa` does (hifa/cli.py): subnormals are far slower on CPUs
    warmup, repeat = (3, 10) if cuda else (1, 3)
    models = Path(args.models or tempfile.mkdtemp(prefix="hifa-bench-"))
    out = Path(args.out)
    plan = (cuda_plan if cuda else cpu_plan)(device, models, warmup, repeat, out)
    sections: dict = {}
    for name, fn in plan.items():
        if args.only and name not in args.only:
            continue
        if args.deadline is not None and time.perf_counter() - started > args.deadline:
            sections[name] = {"skipped": f"past the {args.deadline:.0f} s deadline"}
            continue
        section(sections, name, fn)
        write_report(out, device, sections)
    report = write_report(out, device, sections)
    print(markdown(report))
    print(f"bench: {time.perf_counter() - started:.1f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
