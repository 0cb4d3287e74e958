"""Operator dispatches per phase of a training step (benchmarks/dispatch.py), on a tiny real-world trainer."""

import pytest
import torch

from benchmarks.bench import bench_trainer
from benchmarks.dispatch import dispatches_per_phase


def test_dispatches_are_counted_by_phase_and_the_trainer_is_left_as_it_was(models):
    sd, dpt = models
    small = ["resolution=16", "renderer.num_coarse=8", "renderer.num_fine=4", "field.grid.log2_hashmap_size=12", "field.grid.finest_resolution=64"]
    with bench_trainer("hifa", sd, dpt, small) as trainer:
        trainer.training_step(1)
        counts = dispatches_per_phase(trainer, 2)
        for phase in ("render", "guidance", "prior networks", "depth", "backward", "optimizer", "other"):
            assert counts.get(phase, 0) > 0, (phase, counts)
        assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
        # The labels were instance attributes over the class methods: all removed again.
        assert "forward" not in vars(trainer.renderer) and "loss" not in vars(trainer.guidance)
        assert "forward" not in vars(trainer.prior.unet) and "estimate" not in vars(trainer.estimator)
        # The same step again: the same timestep, so the same denoising calls (the render's branches follow the
        # step's random draws, such as a solid or a learned background).
        assert dispatches_per_phase(trainer, 2)["prior networks"] == counts["prior networks"]


def test_profile_reports_the_hosts_time_per_phase_within_the_steps_wall_time(models, tmp_path):
    from benchmarks.profile_step import profile_train_step

    sd, dpt = models
    small = ["resolution=16", "renderer.num_coarse=8", "renderer.num_fine=4", "field.grid.log2_hashmap_size=12", "field.grid.finest_resolution=64"]
    result = profile_train_step(torch.device("cpu"), "hifa", sd, dpt, small, tmp_path, "-tiny")
    host = result["host_ms_per_step"]
    for phase in ("render", "guidance", "depth", "backward", "optimizer"):
        assert host[phase] > 0, (phase, host)
    assert "prior networks" not in host  # networks=False: a compiled module's forward is left alone
    # The phases do not nest and lie within the step: together they take less than its wall time, the rest is outside them.
    inside = sum(v for k, v in host.items() if k != "outside the phases")
    assert 0 < inside < result["profiled_wall_ms_per_step"]
    assert host["outside the phases"] == pytest.approx(result["profiled_wall_ms_per_step"] - inside, abs=0.11)
    assert (tmp_path / "profile-hifa-tiny.txt").read_text().count("aten::") > 10


def test_train_step_benchmark_times_the_run_s_strata_and_the_first_steps_again(models):
    """bench_train_step as the CUDA plan calls it (run means), on the CPU: a step per stratum, then t_max again."""
    from benchmarks.bench import bench_train_step

    sd, dpt = models
    small = ["resolution=16", "renderer.num_coarse=8", "renderer.num_fine=4", "field.grid.log2_hashmap_size=12", "field.grid.finest_resolution=64"]
    out = bench_train_step(torch.device("cpu"), "hifa", sd, dpt, small, warmup=1, repeat=2, run_mean=3)
    assert out["resolution"] == 16 and out["samples"] == 12 and out["overrides"] == " ".join(small)
    assert len(out["run_mean_steps_ms"]) == 3 and all(t > 0 for t in out["run_mean_steps_ms"])
    assert out["run_mean_step_ms"] == pytest.approx(sum(out["run_mean_steps_ms"]) / 3, abs=0.1)
    assert out["step_ms"] > 0 and out["step_ms_after_run"] > 0 and out["step_ms_back_to_back"] > 0
