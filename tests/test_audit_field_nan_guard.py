"""NanGuard on hand-built step values: counting, the reset on a finite step, the limit of 100 in a row."""

import math

import pytest
import torch

from hifa import nan_guard
from hifa.errors import HifaError
from hifa.nan_guard import NanGuard
from hifa.step_values import StepValues


def step(n, loss=1.0, grad_norm=0.5):
    host = torch.tensor([loss, grad_norm, loss], dtype=torch.float64)
    return StepValues(n, 0.01, ["latent"], ["loss", "grad_norm", "latent"], host)


def test_the_limit_is_one_hundred_skips_in_a_row():
    guard = NanGuard("skip")
    for n in range(1, 100):
        assert guard.check(step(n, loss=math.nan), "kept")["skipped"] == 1.0
    assert (guard.skipped, guard.consecutive) == (99, 99)
    with pytest.raises(HifaError, match=r"^100 non-finite steps in a row up to step 100 \(latent\): the run diverged; stopped, kept$"):
        guard.check(step(100, loss=math.nan), "kept")


def test_a_finite_step_resets_the_run_but_not_the_total(monkeypatch):
    monkeypatch.setattr(nan_guard, "MAX_CONSECUTIVE_SKIPS", 3)
    guard = NanGuard("skip")
    pattern = [math.nan, math.inf, 1.0, math.nan, math.nan, 2.0, math.nan, math.nan]
    for n, loss in enumerate(pattern, 1):
        row = guard.check(step(n, loss=loss), "kept")
        assert (row is None) == math.isfinite(loss)
    assert (guard.skipped, guard.consecutive) == (6, 2)
    with pytest.raises(HifaError, match="3 non-finite steps in a row up to step 9"):
        guard.check(step(9, grad_norm=math.nan), "kept")
    assert guard.skipped == 7


def test_the_stop_policy_stops_at_the_first_non_finite_step_and_counts_nothing():
    guard = NanGuard("stop")
    assert guard.check(step(1), "kept") is None
    with pytest.raises(HifaError, match=r"non-finite loss at step 2 \(gradients\); stopped, kept"):
        guard.check(step(2, grad_norm=math.inf), "kept")
    assert (guard.skipped, guard.consecutive) == (0, 0)
