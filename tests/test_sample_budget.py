"""Fixed-size compaction of the occupancy grid's samples (hifa.sample_budget): the same render without a count read."""

import logging

import pytest
import torch

from hifa.background import BackgroundMLP
from hifa.occupancy import OccupancyConfig
from hifa.renderer import RayOptions, Renderer, RendererConfig
from hifa import sample_budget
from hifa.sample_budget import GRAIN, MARGIN, SampleBudget
from hifa.trainer import Trainer
from tests.host_reads import HostReads
from tests.test_overlap_steps import EXTRA
from tests.test_renderer_fast import assert_same, blob_field, conservative_grid, count_points, render_with_grads, rays
from tests.test_train import tiny_config


def test_compaction_lists_the_occupied_samples_then_padding_that_writes_past_them():
    budget = SampleBudget()
    occupied = torch.zeros(5000, dtype=torch.bool)
    occupied[torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:700]] = True
    assert budget.compact("coarse", occupied) is None  # no count read yet: the caller compacts exactly
    assert budget.capacity("coarse:5000", 5000) is None
    budget.observe({k: float(v) for k, v in budget.take().items()})
    capacity = budget.capacity("coarse:5000", 5000)
    assert capacity == -(-int(700 * MARGIN) // GRAIN) * GRAIN == 1024
    with HostReads() as reads:
        index, slots = budget.compact("coarse", occupied)
    assert reads.ops == []  # no nonzero, no read: nothing for a CUDA host to wait on
    kept = occupied.nonzero().squeeze(-1)
    assert index.shape == slots.shape == (capacity,)
    assert torch.equal(index[:700], kept) and torch.equal(slots[:700], kept)
    assert torch.equal(index[700:], torch.zeros(capacity - 700, dtype=torch.long))  # padding evaluates sample 0 ...
    assert torch.equal(slots[700:], 5000 + torch.arange(700, capacity))  # ... and lands in its own slot past the samples
    values = budget.take()
    assert int(values["count:coarse:5000"]) == 700 and not bool(values["overflow"])
    assert budget.take() == {}  # taken once per step


def test_more_occupied_samples_than_the_capacity_flag_an_overflow_and_the_capacity_follows_the_counts():
    budget = SampleBudget()
    budget.observe({"count:fine:20000": 1000.0})
    assert budget.capacity("fine:20000", 20000) == 2048
    occupied = torch.zeros(20000, dtype=torch.bool)
    occupied[:3000] = True
    budget.compact("fine", occupied)
    values = budget.take()
    assert bool(values["overflow"]) and int(values["count:fine:20000"]) == 3000
    budget.observe({k: float(v) for k, v in values.items()})
    assert budget.capacity("fine:20000", 20000) is None  # an overflow: the next step compacts exactly ...
    budget.observe({"count:fine:20000": 3000.0})
    budget.observe({"count:fine:20000": 2500.0})
    assert budget.capacity("fine:20000", 20000) == 4096  # ... and its count sets the capacity: the largest recent one
    assert budget.capacity("fine:3000", 3000) is None  # another batch size has its own
    budget.observe({"count:tiny:100": 100.0})
    assert budget.capacity("tiny:100", 100) == 100  # never more than the samples there are


RENDERS = {
    "grid samples": dict(grid=16, options={}),
    "grid samples, checkpointed chunks": dict(grid=16, chunk=50, options={}),
    # 'dreamfusion': Lambertian shading's normals where the weight matters, no grid.
    "normals above a weight": dict(threshold=1e-4, options=dict(shading="lambertian", light_dir=torch.tensor([0.0, 1.0, 0.0]),
                                                                need_normals=True)),
    # ... and its orientation loss on a subset of the rays, with the grid.
    "orientation subset": dict(grid=16, threshold=1e-4, options=dict(need_normals=True, normal_ray_fraction=0.3)),
    "orientation subset, checkpointed chunks": dict(grid=16, chunk=50, threshold=1e-4, options=dict(need_normals=True, normal_ray_fraction=0.3)),
}


@pytest.mark.parametrize("case", RENDERS)
def test_a_render_with_a_budget_equals_the_exact_compaction_and_waits_for_nothing(case):
    """Outputs and gradients as with nonzero; the field sees the fixed-size batches; no host read in the render."""
    spec = RENDERS[case]
    field, background = blob_field(), BackgroundMLP()
    origins, dirs = rays()
    config = RendererConfig(num_coarse=32, num_fine=16, checkpoint_chunk_rays=spec.get("chunk", 0), occupancy=OccupancyConfig(resolution=spec.get("grid", 0)),
                            normal_weight_threshold=spec.get("threshold", 0.0))
    options = lambda: RayOptions(training=True, generator=torch.Generator().manual_seed(3), **spec["options"])  # noqa: E731
    results = []
    for budgeted in (False, True):
        renderer = Renderer(field, background, config)
        if renderer.occupancy is not None:
            conservative_grid(renderer)
        if budgeted:
            renderer.budget = SampleBudget()
            # A first render learns the counts (exactly compacted); with autograd, so in the same chunks.
            renderer(origins, dirs, options())
            renderer.budget.observe({k: float(v) for k, v in renderer.budget.take().items()})
        points = count_points(field, "density_features")
        with HostReads() as reads:
            out, grads = render_with_grads(renderer, origins, dirs, options())
        del field.density_features
        results.append((out, grads, points, reads.ops))
    (exact, g_exact, points_exact, reads_exact), (fixed, g_fixed, points_fixed, reads_fixed) = results
    assert_same(exact, fixed, atol=1e-6)
    assert torch.allclose(g_exact, g_fixed, atol=1e-5)
    assert "aten.nonzero.default" in reads_exact and reads_fixed == []
    counts = renderer.budget.counts
    assert ("normals" in " ".join(counts)) == ("threshold" in spec) and ("coarse" in " ".join(counts)) == ("grid" in spec)
    if "grid" in spec:  # the field's density saw the fixed-size batches (and the normals' finite differences, 6 per point)
        capacities = {renderer.budget.capacity(key, int(key.split(":")[1])) for key in counts if not key.startswith("normals")}
        assert capacities <= set(points_fixed) and sum(points_fixed) > sum(points_exact)
    assert not bool(renderer.budget.take().get("overflow"))


@pytest.mark.usefixtures("overlap_on_cpu")
def test_an_overlapped_step_over_its_budget_is_skipped_and_the_budget_grows(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(sample_budget, "GRAIN", 16)  # the tiny run keeps a few hundred samples a pass
    trainer = Trainer(tiny_config(tmp_path, extra=[*EXTRA, "overlap_steps=true"]), tmp_path / "run", progress=False)
    trainer.training_step(1)
    budget = trainer.renderer.budget
    for counts in budget.counts.values():  # as if the first step had kept far fewer samples
        counts[-1] = 1
    before = [p.detach().clone() for p in trainer.renderer.parameters()]
    trainer.training_step(2)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.renderer.parameters()))  # gated out on the device
    with caplog.at_level(logging.WARNING, logger="hifa.trainer"):
        (row,) = trainer.flush()
    assert row["step"] == 2 and row["skipped"] == 1.0 and trainer.skipped_steps == 0  # not a non-finite step
    assert "more occupied samples than its fixed-size batch" in caplog.text
    assert [g["step"] for g in trainer.optimizer.param_groups] == [1, 1]
    assert budget.counts == {}  # start over: step 3 compacts exactly, its count sets the budget again
    trainer.training_step(3)
    assert "skipped" not in trainer.flush()[0] and all(len(counts) == 1 for counts in budget.counts.values())
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.renderer.parameters()))
