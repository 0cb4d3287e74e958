"""A profile of two training steps: the top operators by device and host time, the host's time per phase, and
wall time against kernel time."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.bench import bench_trainer, sync
from benchmarks.dispatch import LABEL, phases
from hifa.io import write_bytes_atomic


def profile_train_step(device: torch.device, preset_name: str, model: str, depth_model: str, overrides: list[str], out: Path,
                       tag: str = "") -> dict:
    """torch.profiler over two training steps after three warm-ups: the top ops by device time, table into `out`.

    Also the two steps' wall time, and the device's kernel time over it: a step whose wall time is well above
    the kernel time waits for the host (kernel launches, syncs), not for the GPU. And where the host spends a
    step ('host_ms_per_step'): the wall time of the trainer's render, guidance, depth, backward and optimiser
    calls (each call's, waits included; the rest of the step under 'outside the phases').
    """
    from torch.profiler import ProfilerActivity, profile

    with bench_trainer(preset_name, model, depth_model, overrides) as trainer:
        for step in (1, 2, 3):
            trainer.training_step(step)
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with phases(trainer, networks=False), profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for step in (4, 5):
                trainer.training_step(step)
            sync(device)
            wall = time.perf_counter() - t0
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = prof.key_averages()
    table = averages.table(sort_by=key, row_limit=50)
    if device.type == "cuda":
        table += "\n\nBy host time:\n" + averages.table(sort_by="self_cpu_time_total", row_limit=30)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / f"profile-{preset_name}{tag}.txt", table.encode())
    events = sorted(averages, key=lambda e: getattr(e, key), reverse=True)[:16]
    result = {e.key[:60]: round(getattr(e, key) / 2e3, 2) for e in events}  # ms per step (two steps profiled)
    # Kernels only (no CPU time, not a user annotation): summed, the device's kernel time (its busy time, or more
    # where kernels on several streams overlap).
    kernels = sum(e.self_device_time_total for e in averages
                  if e.self_cpu_time_total == 0 and e.device_type.name == "CUDA" and not getattr(e, "is_user_annotation", False))
    result.update(profiled_wall_ms_per_step=round(1000 * wall / 2, 1), device_kernel_ms_per_step=round(kernels / 2e3, 1))
    result["host_ms_per_step"] = host_per_phase(averages, wall / 2)
    return result


def host_per_phase(averages, wall_s_per_step: float) -> dict[str, float]:
    """Milliseconds per step (two steps profiled) inside each phase's range, and outside all of them."""
    host = {e.key[len(LABEL):]: round(e.cpu_time_total / 2e3, 1) for e in averages if e.key.startswith(LABEL) and e.device_type.name == "CPU"}
    host["outside the phases"] = round(1000 * wall_s_per_step - sum(host.values()), 1)
    return host
