"""Issue 8.6, numerical faults: NaN or infinity injected into a loss term or into the gradients. The guard
stops (nan_policy=stop, the default) keeping the last good checkpoint, or skips the step
(nan_policy=skip) and logs it: a warning, a log row and an MLflow metric, whatever log_every is."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from hifa import cli
from hifa import nan_guard
from hifa.errors import HifaError
from hifa.trainer import Trainer
from tests.reliability.helpers import PROMPT, tiny_config, tiny_overrides

NAN, INF = float("nan"), float("inf")


def poison_loss(trainer: Trainer, steps: dict[int, float], monkeypatch) -> None:
    """Multiply the guidance term by NaN/inf at the given steps."""
    original = trainer.loss_terms

    def poisoned(step):
        terms, info = original(step)
        if step in steps:
            key = next(iter(terms))
            terms[key] = terms[key] * steps[step]
        return terms, info

    monkeypatch.setattr(trainer, "loss_terms", poisoned)


def poison_gradients(trainer: Trainer, steps: dict[int, float]) -> None:
    """A hook that turns one parameter's gradient to NaN/inf at the given steps (the loss stays finite)."""
    param = next(p for p in trainer.renderer.parameters() if p.requires_grad)
    param.register_hook(lambda grad: grad * steps[trainer.step + 1] if trainer.step + 1 in steps else grad)


def checkpoint(trainer: Trainer) -> dict:
    return torch.load(trainer.run_dir / "checkpoint.pt", weights_only=True)


# overlap_steps: the guard gates Adan's step on the device and reads each step's values during the next step.
OVERLAP = pytest.mark.parametrize("overlap", [(), ("overlap_steps=true",)], ids=["sync", "overlap"])
# ... whose logic is tested here on the CPU, where the option is otherwise inert.
ON_CPU = pytest.mark.usefixtures("overlap_on_cpu")


@OVERLAP
@ON_CPU
@pytest.mark.parametrize("where,value", [("loss", NAN), ("loss", INF), ("gradients", NAN), ("gradients", -INF)])
def test_stop_policy_keeps_the_last_good_checkpoint(where, value, overlap, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, extra=("checkpoint_every=2", *overlap)), tmp_path / "run", progress=False)
    if where == "loss":
        poison_loss(trainer, {5: value}, monkeypatch)
    else:
        poison_gradients(trainer, {5: value})
    bad = "gradients" if where == "gradients" else "latent"
    with pytest.raises(HifaError, match=rf"non-finite loss at step 5 \({bad}\); stopped, the last good checkpoint \(step 4\) is kept"):
        trainer.train()
    state = checkpoint(trainer)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["renderer"].values())


@OVERLAP
@ON_CPU
def test_skip_policy_skips_logs_and_records_each_step(overlap, tmp_path, monkeypatch, caplog):
    db = tmp_path / "mlflow.db"
    config = tiny_config(tmp_path, extra=("nan_policy=skip", "log_every=5", *overlap), db=db)
    from hifa.training import make_tracker

    tracker = make_tracker(config, tmp_path / "run", "skips")
    trainer = Trainer(config, tmp_path / "run", tracker=tracker, progress=False)
    assert trainer.overlap == bool(overlap)
    poison_loss(trainer, {2: NAN, 7: INF}, monkeypatch)
    poison_gradients(trainer, {4: NAN})
    with caplog.at_level(logging.WARNING, logger="hifa.nan_guard"):
        summary = trainer.train()
    tracker.set_terminated()
    warnings = [r.getMessage() for r in caplog.records]
    assert [w.split(":")[0] for w in warnings] == ["non-finite loss at step 2 (latent)", "non-finite loss at step 4 (gradients)",
                                                    "non-finite loss at step 7 (latent)"], warnings
    assert all("step skipped (nan_policy=skip)" in w for w in warnings)
    assert summary["steps"] == 12 and summary["skipped_steps"] == 3
    rows = {int(r["step"]): r for r in trainer.log_rows}
    assert sorted(rows) == [2, 4, 5, 7, 10, 12], "skipped steps are logged even off log_every"
    assert all(rows[s].get("skipped") == 1.0 for s in (2, 4, 7)) and "skipped" not in rows[5]
    assert all(torch.isfinite(p).all() for p in trainer.renderer.parameters())
    assert "skipped" in (trainer.run_dir / "train_log.csv").read_text().splitlines()[0]
    from mlflow.tracking import MlflowClient

    history = MlflowClient(f"sqlite:///{db}").get_metric_history(tracker.run_id, "skipped")
    assert sorted(m.step for m in history) == [2, 4, 7]
    # the skip counter survives a resume
    assert checkpoint(trainer)["skipped_steps"] == 3


@OVERLAP
@ON_CPU
def test_a_run_that_only_produces_nan_stops_as_diverged(overlap, tmp_path, monkeypatch):
    monkeypatch.setattr(nan_guard, "MAX_CONSECUTIVE_SKIPS", 3)
    trainer = Trainer(tiny_config(tmp_path, extra=("nan_policy=skip", "checkpoint_every=1", *overlap)), tmp_path / "run", progress=False)
    poison_loss(trainer, {s: NAN for s in range(4, 13)}, monkeypatch)
    with pytest.raises(HifaError, match=r"3 non-finite steps in a row up to step 6 \(latent\): the run diverged; stopped, the last good checkpoint \(step 5\)"):
        trainer.train()
    state = checkpoint(trainer)  # skipped steps leave the weights as they were: still the step-3 weights
    assert state["step"] == 5 and all(torch.isfinite(v).all() for v in state["renderer"].values())


def test_cli_nan_stop_is_one_line_and_the_mlflow_run_failed(tmp_path, monkeypatch, capsys):
    original = Trainer.loss_terms

    def poisoned(self, step):
        terms, info = original(self, step)
        return ({k: v * NAN for k, v in terms.items()} if step == 5 else terms), info

    monkeypatch.setattr(Trainer, "loss_terms", poisoned)
    db, run = tmp_path / "mlflow.db", tmp_path / "run"
    sets = [f"--set={o}" for o in tiny_overrides(tmp_path / "cache", db)]
    code = cli.main(["train", "--prompt", PROMPT, "--prior", "oracle", "--quiet", "--out", str(run), *sets])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("hifa: error: non-finite loss at step 5 (latent"), err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    assert not (run / "train_summary.json").exists()
    from mlflow.tracking import MlflowClient

    assert MlflowClient(f"sqlite:///{db}").get_run(json.loads((run / "run.json").read_text())["run_id"]).info.status == "FAILED"
