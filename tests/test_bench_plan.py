"""The CUDA benchmark plan, checked on a CPU: GPU time is scarce, so a mistyped override must fail here, not there."""

from pathlib import Path

import torch

import benchmarks.bench as bench
import benchmarks.profile_step
import benchmarks.sd_architecture
from hifa.training import resolve_config


def test_every_section_of_the_cuda_plan_resolves_its_training_config(monkeypatch, tmp_path):
    models = {"sd": "/models/sd21-base", "dpt": "/models/dpt-hybrid"}
    monkeypatch.setattr(benchmarks.sd_architecture, "build_sd21_base", lambda folder: Path(models["sd"]))
    monkeypatch.setattr(benchmarks.sd_architecture, "build_dpt_hybrid", lambda folder: Path(models["dpt"]))
    calls: list[tuple[str, str, list[str]]] = []

    def train_step(device, preset_name, model, depth_model, overrides, *args, **kwargs):
        # What bench_trainer resolves before it builds a trainer: an unknown key or a bad value raises here.
        config = resolve_config(preset_name, "a ladybug", f"stable-diffusion:{model}",
                                overrides=["tracking.enabled=false", f"depth.model={depth_model}", *overrides])
        assert config.prior.model == models["sd"] and config.depth.model == models["dpt"]
        calls.append(("train", preset_name, list(overrides)))
        return {}

    def other(kind):
        def record(device, *args, **kwargs):
            calls.append((kind, str(args[0]) if args else "", []))
            return {}
        return record

    monkeypatch.setattr(bench, "bench_train_step", train_step)
    monkeypatch.setattr(benchmarks.profile_step, "profile_train_step", lambda device, preset, model, dpt, overrides, out, tag="": train_step(device, preset, model, dpt, overrides))
    for name in ("bench_guidance", "bench_render", "bench_encoding", "bench_encoding_rays"):
        monkeypatch.setattr(bench, name, other(name))
    plan = bench.cuda_plan(torch.device("cpu"), tmp_path / "models", 1, 1, tmp_path / "out")
    for name, run in plan.items():
        run()  # raises on a config error
    trains = [c for c in calls if c[0] == "train"]
    assert len(calls) == len(plan) and len(trains) >= 25
    # The first sections: 'hifa-fast' with every speed option measured or pending, with overlap_steps and without (an
    # A/B on one machine), then the profile of the first.
    first = list(plan)
    assert first[0].startswith("train_step_hifa-fast+") and first[2] == "profile_hifa-fast_ms_per_step"
    assert trains[0][2] == trains[2][2] and "renderer.compile=true" in trains[0][2] and "prior.vae_attention=math" in trains[0][2]
    assert trains[0][2] == [*trains[1][2], "overlap_steps=true"]
    pending = ["prior.decoder_compile_mode=reduce-overhead", "depth.compile_mode=reduce-overhead", "prior.channels_last=true"]
    for option in pending:
        assert any(option in overrides for _, _, overrides in trains), option

