"""overlap_steps: each step's NaN guard gates Adan on the device and its values are read during the next step.

The results must be those of the waiting loop; the CUDA side (no host wait at the step's end) is tests/cuda.
"""

import logging

import pytest
import torch

from hifa import step_values
from hifa.trainer import Trainer
from tests.test_train import tiny_config

ON_CPU = pytest.mark.usefixtures("overlap_on_cpu")  # the option's logic, which takes effect on CUDA only

# EMA on and the occupancy grid too: every part of the step that the gate and the lagged read touch.
EXTRA = ["tracking.enabled=false", "optim.ema_decay=0.9", "renderer.occupancy.resolution=16", "renderer.occupancy.update_every=2"]


@ON_CPU
@pytest.mark.parametrize("method,grid", [("hifa", False), ("hifa", True), ("dreamfusion", False)],
                         ids=["hifa-dense", "hifa-occupancy-grid", "dreamfusion-normals"])
def test_overlapped_steps_train_as_waiting_ones(tmp_path, method, grid):
    """'hifa' without the grid bit for bit. With it, the overlapped run compacts its samples into fixed-size batches
    (hifa.sample_budget) from step 2 on, which moves the hash grid's gradient sums by rounding (~1e-9 here); so do
    'dreamfusion''s normals for its orientation loss."""
    extra = EXTRA if grid else [*EXTRA[:2], "renderer.occupancy.resolution=0"]
    runs = {}
    for overlap in (False, True):
        config = tiny_config(tmp_path, method, extra=[*extra, f"overlap_steps={str(overlap).lower()}"])
        trainer = Trainer(config, tmp_path / str(overlap), progress=False)
        trainer.train()
        runs[overlap] = trainer
    waiting, overlapped = runs[False], runs[True]
    assert overlapped.step == 6 and overlapped.pending is None
    exact = method == "hifa" and not grid
    same = torch.equal if exact else (lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-8))
    for (name, a), (_, b) in zip(waiting.renderer.state_dict().items(), overlapped.renderer.state_dict().items()):
        assert same(a, b), name
    assert all(same(a, b) for a, b in zip(waiting.ema, overlapped.ema))
    assert [g["step"] for g in overlapped.optimizer.param_groups] == [6, 6]
    strip = lambda rows: [{k: v for k, v in row.items() if k != "time_s"} for row in rows]  # noqa: E731
    rows, expected = strip(overlapped.log_rows), strip(waiting.log_rows)
    assert len(rows) == 6 and [r.keys() for r in rows] == [r.keys() for r in expected]
    assert all(r[k] == pytest.approx(e[k], rel=1e-5) for r, e in zip(rows, expected) for k in r), (rows, expected)
    # What the budget compacted, each count of steps 1-6 read: nothing ('hifa' without the grid), the grid's coarse
    # and fine samples, or 'dreamfusion''s normals; the capacities cover the counts with room to spare.
    keys = {(False, "hifa"): [], (True, "hifa"): ["coarse:3072", "fine:1536"], (False, "dreamfusion"): ["normals:144"]}[grid, method]
    budget = overlapped.renderer.budget
    assert sorted(budget.counts) == keys and all(len(c) == 6 for c in budget.counts.values())
    assert all(max(c) < budget.capacity(key, int(key.split(":")[1])) for key, c in budget.counts.items())


@ON_CPU
def test_a_step_reads_only_the_previous_step_s_values(tmp_path, monkeypatch):
    """The first step waits (Adan's state comes from its gradient); each later one reads the one before it."""
    reads: list[int] = []
    original = step_values.StepValues.read

    def read(self):
        reads.append(self.step)
        return original(self)

    monkeypatch.setattr(step_values.StepValues, "read", read)
    trainer = Trainer(tiny_config(tmp_path, extra=[*EXTRA, "overlap_steps=true"]), tmp_path / "run", progress=False)
    returned, read_during = [], []
    for step in range(1, 5):
        reads.clear()
        returned.append([row["step"] for row in trainer.training_step(step)])
        read_during.append(sorted(set(reads)))
    assert returned == [[1], [], [2], [3]] and read_during == [[1], [], [2], [3]]
    reads.clear()
    assert [row["step"] for row in trainer.flush()] == [4] and set(reads) == {4} and trainer.flush() == []


@ON_CPU
def test_a_skipped_overlapped_step_leaves_the_weights_and_takes_its_count_back(tmp_path):
    """A non-finite step is gated out on the device: the weights, Adan's state and the EMA stay as they were."""
    trainer = Trainer(tiny_config(tmp_path, extra=[*EXTRA, "overlap_steps=true", "nan_policy=skip"]), tmp_path / "run", progress=False)
    trainer.training_step(1)
    param = next(trainer.renderer.parameters())
    before = [t.clone() for t in trainer.renderer.parameters()]
    state = {k: v.clone() for k, v in trainer.optimizer.state[param].items()}
    ema = [t.clone() for t in trainer.ema]
    original = trainer.loss_terms

    def poisoned(step):
        terms, info = original(step)
        return {k: v * float("nan") for k, v in terms.items()}, info

    trainer.loss_terms = poisoned
    assert trainer.training_step(2) == []
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.renderer.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ema, trainer.ema))
    assert all(torch.equal(state[k], trainer.optimizer.state[param][k]) for k in ("exp_avg", "exp_avg_sq", "exp_avg_diff", "previous_grad"))
    assert trainer.optimizer.param_groups[0]["step"] == 2  # counted until its values are read
    (row,) = trainer.flush()
    assert row["skipped"] == 1.0 and row["step"] == 2 and trainer.skipped_steps == 1
    assert [g["step"] for g in trainer.optimizer.param_groups] == [1, 1]


@ON_CPU
@pytest.mark.parametrize("until", [2, 4])
def test_an_overlapped_run_resumes_as_it_would_have_gone_on(tmp_path, until):
    """A checkpoint settles the last step first: its log row, skip count and Adan's step count are in it."""
    config = tiny_config(tmp_path, extra=[*EXTRA, "overlap_steps=true", "checkpoint_every=100"])
    straight = Trainer(config, tmp_path / "a", progress=False)
    straight.train()
    first = Trainer(config, tmp_path / "b", progress=False)
    first.train(until=until)
    assert first.pending is None and len(first.log_rows) == until
    resumed = Trainer(config, tmp_path / "b", progress=False)
    resumed.train()
    for (name, a), (_, b) in zip(straight.renderer.state_dict().items(), resumed.renderer.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert [row["step"] for row in resumed.log_rows] == list(range(1, 7))


def test_on_a_cpu_the_option_is_inert_and_says_so(tmp_path, caplog):
    """No GPU to wait for: the waiting loop runs (the padded batches made a CPU step ~20 % slower, measured)."""
    with caplog.at_level(logging.WARNING, logger="hifa.trainer"):
        trainer = Trainer(tiny_config(tmp_path, extra=[*EXTRA, "overlap_steps=true"]), tmp_path / "run", progress=False)
    assert "overlap_steps has no effect on cpu" in caplog.text
    assert not trainer.overlap and trainer.renderer.budget is None and trainer.renderer.occupancy is not None
    trainer.training_step(1)
    assert [row["step"] for row in trainer.training_step(2)] == [2] and trainer.pending is None


@ON_CPU
def test_a_parameter_s_first_gradient_after_the_first_step_makes_that_step_wait(tmp_path):
    """Adan's state starts from a parameter's first gradient (a background MLP first used at step 3, say): that step
    settles the previous one, then waits for its own values, and the run trains as the waiting loop does."""
    runs = {}
    for overlap in (False, True):
        config = tiny_config(tmp_path, extra=[*EXTRA[:2], f"overlap_steps={str(overlap).lower()}"])
        trainer = Trainer(config, tmp_path / str(overlap), progress=False)
        late = list(trainer.renderer.background.parameters())
        rows = []
        for step in range(1, 6):
            for p in late:
                p.requires_grad_(step >= 3)
            rows.append([row["step"] for row in trainer.training_step(step)])
        rows.append([row["step"] for row in trainer.flush()])
        runs[overlap] = trainer, rows
    (waiting, waiting_rows), (overlapped, overlapped_rows) = runs[False], runs[True]
    assert waiting_rows == [[1], [2], [3], [4], [5], []]
    assert overlapped_rows == [[1], [], [2, 3], [], [4], [5]]
    for (name, a), (_, b) in zip(waiting.renderer.state_dict().items(), overlapped.renderer.state_dict().items()):
        assert torch.equal(a, b), name
