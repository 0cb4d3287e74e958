"""Audit of resume: a resumed run continues the EMA, the random streams and the NaN guard's counts exactly where they were."""

import pytest
import torch

import hifa.nan_guard
from hifa.errors import HifaError
from hifa.trainer import Trainer
from tests.test_audit_trainer_loop import config_for


def poison(trainer, monkeypatch, steps) -> None:
    """Make the first loss term NaN at `steps`."""
    original = trainer.loss_terms

    def poisoned(step):
        terms, info = original(step)
        if step in steps:
            key = next(iter(terms))
            terms = {**terms, key: terms[key] * float("nan")}
        return terms, info

    monkeypatch.setattr(trainer, "loss_terms", poisoned)


def test_a_resumed_dreamfusion_run_equals_an_uninterrupted_one_ema_included(oracle_bank, tmp_path):
    """'dreamfusion' keeps an EMA (its shadows are not parameters: the checkpoint carries them apart)."""
    config = config_for(oracle_bank, "optim.ema_decay=0.5", method="dreamfusion")
    straight = Trainer(config, tmp_path / "a", progress=False)
    straight.train()
    Trainer(config, tmp_path / "b", progress=False).train(until=3)
    resumed = Trainer(config, tmp_path / "b", progress=False)
    resumed.train()
    assert resumed.step == straight.step == 6
    for (name, a), (_, b) in zip(straight.renderer.state_dict().items(), resumed.renderer.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert straight.ema is not None and len(straight.ema) == len(resumed.ema)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(straight.ema, resumed.ema))
    # The EMA lags the parameters (decay 0.5 over 6 steps), so comparing it is not comparing the parameters again.
    assert any(not torch.allclose(e, p) for e, p in zip(straight.ema, straight.renderer.parameters()))


def test_skipped_steps_are_counted_over_a_resume(oracle_bank, tmp_path, monkeypatch):
    config = config_for(oracle_bank, "nan_policy=skip")
    first = Trainer(config, tmp_path / "run", progress=False)
    poison(first, monkeypatch, {2})
    first.train(until=3)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["skipped_steps"] == 1
    summary = Trainer(config, tmp_path / "run", progress=False).train()
    assert summary["skipped_steps"] == 1 and summary["steps"] == 6


def test_skips_in_a_row_are_counted_across_a_resume(oracle_bank, tmp_path, monkeypatch):
    """Steps 3 and 4 non-finite, with a resume between them: two in a row, which a limit of 2 calls a divergence."""
    monkeypatch.setattr(hifa.nan_guard, "MAX_CONSECUTIVE_SKIPS", 2)
    config = config_for(oracle_bank, "nan_policy=skip")
    first = Trainer(config, tmp_path / "run", progress=False)
    poison(first, monkeypatch, {3})
    first.train(until=3)
    resumed = Trainer(config, tmp_path / "run", progress=False)
    poison(resumed, monkeypatch, {4})
    with pytest.raises(HifaError, match=r"^2 non-finite steps in a row up to step 4 .*checkpoint \(step 3\)"):
        resumed.train()


def test_after_a_resume_the_guard_names_the_checkpoint_it_resumed_from(oracle_bank, tmp_path, monkeypatch):
    config = config_for(oracle_bank, "checkpoint_every=3", "iterations=9")
    Trainer(config, tmp_path / "run", progress=False).train(until=3)
    resumed = Trainer(config, tmp_path / "run", progress=False)
    poison(resumed, monkeypatch, {5})
    with pytest.raises(HifaError, match=r"non-finite loss at step 5 .*the last good checkpoint \(step 3\)"):
        resumed.train()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 3
