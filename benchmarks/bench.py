"""Speed benchmarks: hash grid, renderer (and its fast paths), guidance, one training step per preset, memory.

Usage: python benchmarks/bench.py [--device auto|cpu|cuda] [--quick] [--out benchmarks/results]
On CUDA the sizes are the presets' real ones (SD 2.1-base architecture with random weights,
512x512 renders); on CPU they are tiny and the figures that travel between machines are the
ratios. Writes bench-<device>.json and bench-<device>.md; a section that fails (for example out
of memory) is recorded with its error instead of stopping the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reconstruct import machine  # noqa: E402
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
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 - recorded, the next section still runs
        results[name] = {"error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}"}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"bench: {name}: {results[name]}", flush=True)


def bench_encoding(device: torch.device, points: int, warmup: int, repeat: int) -> dict:
    from hifa.encoding import HashGridConfig, HashGridEncoding, tcnn_available

    out = {"points": points}
    backends = ["torch", "cpp"] if device.type == "cpu" else ["torch"] + (["tcnn"] if tcnn_available() else [])
    for backend in backends:
        enc = HashGridEncoding(HashGridConfig(backend=backend)).to(device)
        x = torch.rand(points, 3, device=device) * 2 - 1

        def step() -> None:
            enc(x).square().sum().backward()

        out[f"{backend}_points_per_s"] = points / timed(step, device, warmup, repeat)
    return out


def saved_for_backward(fn: Callable[[], object]) -> float:
    """MiB that autograd keeps for backward during `fn` (a checkpointed region keeps only its outputs)."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0] / 2**20


def bench_render(device: torch.device, preset_name: str, rays: int, warmup: int, repeat: int, checkpoint_chunk: int = 0, occupancy: int = 0) -> dict:
    """Forward + backward of a training render; optionally checkpointed chunks or an occupancy grid (updated once)."""
    from hifa.occupancy import OccupancyConfig
    from hifa.presets import preset
    from hifa.regularisers import z_entropy_loss
    from hifa.renderer import RayOptions
    from hifa.trainer import build_renderer

    config = preset(preset_name)
    fast = replace(config.renderer, checkpoint_chunk_rays=checkpoint_chunk, occupancy=OccupancyConfig(resolution=occupancy))
    renderer = build_renderer(replace(config, renderer=fast)).to(device)
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
        renderer.field.density_features = lambda p: points.append(len(p)) or field_call(p)
        with torch.no_grad():
            renderer(origins, dirs, options)
        del renderer.field.density_features
        extra = {"grid_resolution": occupancy, "occupied_cells": renderer.occupancy.occupancy(), "field_points_fraction": sum(points) / (rays * samples)}
    if checkpoint_chunk:
        extra["checkpoint_chunk_rays"] = checkpoint_chunk

    def step() -> None:
        out = renderer(origins, dirs, options)
        # A per-sample term too, as HiFA's regularisers: training keeps the per-sample outputs for backward.
        (out["image"].sum() + out["z_variance"].sum() + z_entropy_loss(out["weights"], out["deltas"])).backward()

    peak_memory(device, reset=True)
    seconds = timed(step, device, warmup, repeat)
    peak = peak_memory(device)
    return {"rays": rays, "samples_per_ray": samples, "rays_per_s": rays / seconds, "peak_gib": peak,
            "saved_mib": saved_for_backward(step), **extra}


def bench_guidance(device: torch.device, model: str, resolution: int, warmup: int, repeat: int) -> dict:
    from hifa.cameras import orbit_cameras
    from hifa.guidance.guidance import Guidance, GuidanceConfig
    from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior

    prior = StableDiffusionPrior(StableDiffusionConfig(model=model))
    camera = orbit_cameras(1)
    image = torch.rand(1, 3, resolution, resolution, device=device, requires_grad=True)
    out: dict = {"dtype": str(prior.dtype), "prior_image_size": prior.image_size}
    gen = torch.Generator().manual_seed(0)
    variants = [("sds", GuidanceConfig(method="sds", view_mode="suffix", schedule="uniform", denoising_steps=1))]
    variants += [(f"hifa_k{k}", GuidanceConfig(method="hifa", denoising_steps=k)) for k in (1, 2, 4)]
    for name, cfg in variants:
        guidance = Guidance(prior, cfg)

        def step(guidance: Guidance = guidance) -> None:
            # Step 1 of the sqrt anneal is t = t_max, where K-step denoising runs all K UNet calls.
            terms = guidance.loss(image, "a ladybug", camera, 1, 10_000, gen).terms
            sum(terms.values()).backward()

        peak_memory(device, reset=True)
        out[f"{name}_ms"] = 1000 * timed(step, device, warmup, repeat)
        out[f"{name}_peak_gib"] = peak_memory(device)
    return out


def bench_train_step(device: torch.device, preset_name: str, model: str, depth_model: str, overrides: list[str], warmup: int, repeat: int) -> dict:
    from hifa.trainer import Trainer
    from hifa.training import resolve_config

    config = resolve_config(preset_name, "a ladybug", f"stable-diffusion:{model}", overrides=["tracking.enabled=false", f"depth.model={depth_model}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp), progress=False)
        counter = iter(range(1, 10_000))
        peak_memory(device, reset=True)
        seconds = timed(lambda: trainer.training_step(next(counter)), device, warmup, repeat)
        return {"resolution": config.resolution, "samples": config.renderer.num_coarse + config.renderer.num_fine, "step_ms": 1000 * seconds, "peak_gib": peak_memory(device)}


def markdown(report: dict) -> str:
    lines = [f"# Benchmarks on {report['device_name']} ({report['machine']['date']}, commit {report['machine']['commit']})", ""]
    for name, figures in report["sections"].items():
        lines.append(f"- **{name}**: " + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in figures.items()))
    if report.get("ratios"):
        lines += ["", "Ratios (machine-independent):", ""]
        lines += [f"- {k}: {v:.3g}" for k, v in report["ratios"].items()]
    return "\n".join(lines) + "\n"


def ratios(sections: dict) -> dict:
    """Figures that hold across machines: relative costs."""
    out = {}
    g = sections.get("guidance", {})
    if "sds_ms" in g:
        for k in (1, 2, 4):
            if f"hifa_k{k}_ms" in g:
                out[f"guidance hifa K={k} / sds"] = g[f"hifa_k{k}_ms"] / g["sds_ms"]
    steps = {name: s["step_ms"] for name, s in sections.items() if name.startswith("train_step") and "step_ms" in s}
    if "train_step_hifa" in steps and "train_step_hifa-fast" in steps:
        out["train step hifa-fast / hifa"] = steps["train_step_hifa-fast"] / steps["train_step_hifa"]
    render = {name: s for name, s in sections.items() if name.startswith("render_hifa") and "rays_per_s" in s}
    if "render_hifa" in render:
        base = render["render_hifa"]
        for name, label in (("render_hifa+checkpoint", "checkpointed chunks"), ("render_hifa+occupancy", "occupancy skipping")):
            if name in render:
                out[f"render hifa {label} / one pass: time"] = base["rays_per_s"] / render[name]["rays_per_s"]
                out[f"render hifa {label} / one pass: memory kept for backward"] = render[name]["saved_mib"] / base["saved_mib"]
        if "field_points_fraction" in render.get("render_hifa+occupancy", {}):
            out["render hifa occupancy skipping / one pass: field points"] = render["render_hifa+occupancy"]["field_points_fraction"]
    if "train_step_hifa" in steps and "train_step_hifa+checkpoint" in steps:
        out["train step hifa checkpointed / hifa"] = steps["train_step_hifa+checkpoint"] / steps["train_step_hifa"]
    e = sections.get("encoding", {})
    if "cpp_points_per_s" in e and "torch_points_per_s" in e:
        out["encoding cpp / torch speed-up"] = e["cpp_points_per_s"] / e["torch_points_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--models", default=None, help="folder for the random full-size checkpoints (CUDA)")
    parser.add_argument("--only", nargs="*", help="section names to run (default: all)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    torch.set_flush_denormal(True)  # as `hifa` does (hifa/cli.py): subnormals are far slower on CPUs
    warmup, repeat = (3, 10) if cuda else (1, 3)
    models = Path(args.models or tempfile.mkdtemp(prefix="hifa-bench-"))
    if cuda:
        from benchmarks.sd_architecture import build_dpt_large, build_sd21_base

        sd, dpt = build_sd21_base(models / "sd21-base"), build_dpt_large(models / "dpt-large")
        # 'hifa' at 256x256 too: its full 512x512 render does not fit in pure PyTorch (see the JSON).
        # 'hifa+checkpoint': the full 512x512 render in checkpointed chunks (renderer.checkpoint_chunk_rays).
        train_overrides = {"hifa": [], "hifa-fast": [], "dreamfusion": [], "hifa@256": ["resolution=256"],
                           "hifa+checkpoint": ["renderer.checkpoint_chunk_rays=16384"]}
        resolution, enc_points, render_rays, grid = 512, 1 << 21, 1 << 14, 64
    else:
        from tests.tinyworld import build_tiny_dpt, build_tiny_stable_diffusion

        sd, dpt = build_tiny_stable_diffusion(models / "tiny-sd"), build_tiny_dpt(models / "tiny-dpt")
        small = ["resolution=32", "renderer.num_coarse=16", "renderer.num_fine=8", "field.grid.log2_hashmap_size=14", "field.grid.finest_resolution=256"]
        train_overrides = {"hifa": small, "hifa-fast": small[1:] + ["resolution=16"], "dreamfusion": small[1:] + ["resolution=16"],
                           "hifa+checkpoint": small + ["renderer.checkpoint_chunk_rays=256"]}
        resolution, enc_points, render_rays, grid = 64, 1 << 15, 1 << 9, 32
    plan = {
        "encoding": lambda: bench_encoding(device, enc_points, warmup, repeat),
        "render_hifa": lambda: bench_render(device, "hifa", render_rays, warmup, repeat),
        "render_hifa+checkpoint": lambda: bench_render(device, "hifa", render_rays, warmup, repeat, checkpoint_chunk=render_rays // 4),
        "render_hifa+occupancy": lambda: bench_render(device, "hifa", render_rays, warmup, repeat, occupancy=grid),
        "render_hifa-fast": lambda: bench_render(device, "hifa-fast", render_rays, warmup, repeat),
        "guidance": lambda: bench_guidance(device, str(sd), resolution, warmup, repeat),
    }
    for name, over in train_overrides.items():
        preset_name = name.split("@")[0].split("+")[0]
        plan[f"train_step_{name}"] = lambda p=preset_name, over=over: bench_train_step(device, p, str(sd), str(dpt), over, warmup, repeat)
    sections: dict = {}
    for name, fn in plan.items():
        if not args.only or name in args.only:
            section(sections, name, fn)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    report = {"device": device.type, "device_name": name, "machine": machine(), "sections": sections, "ratios": ratios(sections)}
    out = Path(args.out)
    tag = "cuda" if cuda else "cpu"
    write_json_atomic(out / f"bench-{tag}.json", report)
    write_bytes_atomic(out / f"bench-{tag}.md", markdown(report).encode())
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
