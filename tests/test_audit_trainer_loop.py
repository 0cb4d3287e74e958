"""Audit of the training loop's schedules: learning-rate warm-up, checkpoint, log and validation steps, seeding, term weights."""

import dataclasses
import math
import signal

import pytest
import torch

import hifa.trainer
from hifa.stop_signals import catch_stop_signals
from hifa.trainer import Trainer
from tests.test_train import tiny_config


def config_for(oracle_bank, *extra, method="hifa"):
    return tiny_config(oracle_bank, method, extra=["tracking.enabled=false", *extra])


def recording_checkpoints(trainer, monkeypatch) -> list[int]:
    saved: list[int] = []
    original = trainer.save_checkpoint

    def save():
        saved.append(trainer.step)
        return original()

    monkeypatch.setattr(trainer, "save_checkpoint", save)
    return saved


def test_warm_up_runs_global_step_i_at_lr_times_i_minus_1_over_warmup(oracle_bank, tmp_path):
    """method.md §6.3/§10: step i runs at factor (i-1)/warmup, the grid group at grid_lr_scale times the MLPs' lr."""
    config = config_for(oracle_bank, "optim.warmup_steps=4", "optim.lr=0.004", "optim.grid_lr_scale=10")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    initial = [p.detach().clone() for p in trainer.renderer.parameters()]
    trainer.train(until=1)
    # Step 1 runs at lr 0: Adan's update and its proximal decay both scale with lr, so nothing moves.
    assert all(torch.equal(a, p) for a, p in zip(initial, trainer.renderer.parameters()))
    trainer.train(until=3)
    assert [row["lr"] for row in trainer.log_rows] == pytest.approx([0.0, 0.004 * 1 / 4, 0.004 * 2 / 4])
    lrs = {group["name"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert lrs == {"mlp": pytest.approx(0.004 * 2 / 4), "grid": pytest.approx(0.04 * 2 / 4)}
    assert any(not torch.equal(a, p) for a, p in zip(initial, trainer.renderer.parameters()))


@pytest.mark.parametrize("every,iterations,until,expected", [(2, 5, None, [2, 4, 5]), (3, 6, 4, [3, 4]), (4, 6, 99, [4, 6])])
def test_checkpoints_at_multiples_of_checkpoint_every_and_at_the_last_step(oracle_bank, tmp_path, monkeypatch, every, iterations, until,
                                                                         expected):
    config = config_for(oracle_bank, f"checkpoint_every={every}", f"iterations={iterations}", "val_every=100")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    saved = recording_checkpoints(trainer, monkeypatch)
    summary = trainer.train(until=until)
    assert saved == expected
    assert summary["steps"] == trainer.step == expected[-1]  # `until` past the iterations stops at the iterations
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == expected[-1]


def test_rows_are_logged_every_log_every_steps_at_the_last_step_and_at_a_skipped_one(oracle_bank, tmp_path, monkeypatch):
    config = config_for(oracle_bank, "log_every=4", "nan_policy=skip", "val_every=100")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    original = trainer.loss_terms

    def poisoned(step):
        terms, info = original(step)
        if step == 1:
            terms = {**terms, "latent": terms["latent"] * float("nan")}
        return terms, info

    monkeypatch.setattr(trainer, "loss_terms", poisoned)
    summary = trainer.train()
    assert [int(row["step"]) for row in trainer.log_rows] == [1, 4, 6]
    assert trainer.log_rows[0].get("skipped") == 1.0 and "skipped" not in trainer.log_rows[1]
    # The summary's final loss is the last logged row's, as train_log.csv holds it.
    header, *lines = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    last = dict(zip(header.split(","), lines[-1].split(",")))
    assert int(last["step"]) == 6 and summary["final_loss"] == pytest.approx(float(last["loss"]), rel=1e-5)
    assert summary["skipped_steps"] == 1


def test_the_field_s_initial_weights_follow_config_seed_not_the_caller_s_random_state(oracle_bank, tmp_path):
    def initial(seed, global_seed):
        torch.manual_seed(global_seed)
        trainer = Trainer(config_for(oracle_bank, f"seed={seed}"), tmp_path / f"{seed}-{global_seed}", progress=False)
        return [p.detach().clone() for p in trainer.renderer.parameters()]

    a, b, c = initial(3, 0), initial(3, 12345), initial(4, 0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, z) for x, z in zip(a, c))


def test_loss_terms_carry_their_weights_and_schedules(oracle_bank, tmp_path, monkeypatch):
    """method.md §5: zvar, z-entropy and sample entropy ramp with r(i) = min(1, 2i/N); monotonicity and opacity entropy
    do not; depth is lambda_d (1 - sqrt(i/N)) 0.05 256^2 / 2 times its SSI term. Each unweighted term is made 1 here."""
    config = config_for(oracle_bank, "iterations=8", "regularisers.zvar=3", "regularisers.z_entropy=0.01", "regularisers.monotonicity=1",
                        "regularisers.opacity_entropy=1e-4", "regularisers.sample_entropy=0.5", "depth.weight=0.1", "depth.loss=ssi")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    one = lambda *args, **kwargs: torch.tensor(1.0)  # noqa: E731
    names = ("zvar", "z_entropy", "monotonicity", "opacity_entropy", "sample_entropy", "ssi_depth")
    trainer.loss_math = dataclasses.replace(trainer.loss_math, **dict.fromkeys(names, one))
    for step in (1, 2, 4, 6):
        terms, _ = trainer.loss_terms(step)
        r = min(1.0, 2.0 * step / 8)
        expected = {"zvar": 3 * r, "z_entropy": 0.01 * r, "monotonicity": 1.0, "opacity_entropy": 1e-4, "sample_entropy": 0.5 * r,
                    "depth": 0.1 * (1 - math.sqrt(step / 8)) * 0.05 * 256**2 / 2}
        for key, value in expected.items():
            assert float(terms[key]) == pytest.approx(value, rel=1e-6), (step, key)


def test_validation_views_orbit_at_the_middle_of_the_training_radius_and_field_of_view(oracle_bank, tmp_path, monkeypatch):
    config = config_for(oracle_bank, "cameras.radius=[1.5,2.5]", "cameras.fovy_deg=[30,50]", "val_views=3")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    calls = []
    original = hifa.trainer.orbit_cameras

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(hifa.trainer, "orbit_cameras", recording)
    path = trainer.save_validation(7)
    assert path.name == "step_000007.png"
    ((args, kwargs),) = calls
    assert args == (3,) and kwargs["radius"] == pytest.approx(2.0) and kwargs["fovy_deg"] == pytest.approx(40.0)


def test_the_evaluation_renderer_holds_the_ema_weights(oracle_bank, tmp_path):
    config = config_for(oracle_bank, "optim.ema_decay=0.75")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    initial = [p.detach().clone() for p in trainer.renderer.parameters()]
    trainer.train(until=3)
    evaluated = list(trainer.eval_renderer().parameters())
    # Reference: after each step the shadow moves 1 - decay (a quarter) of the way to the parameters; those come
    # from a second run stopped after each step.
    replay = Trainer(config, tmp_path / "replay", progress=False)
    shadow = [p.clone() for p in initial]
    for step in (1, 2, 3):
        replay.train(until=step)
        shadow = [s + 0.25 * (p.detach() - s) for s, p in zip(shadow, replay.renderer.parameters())]
    assert all(torch.allclose(e, s, atol=1e-6) for e, s in zip(evaluated, shadow))
    assert any(not torch.allclose(e, p) for e, p in zip(evaluated, trainer.renderer.parameters()))


def test_stop_signals_are_caught_during_the_loop_only_and_a_second_ctrl_c_interrupts(oracle_bank, tmp_path):
    before_term = signal.getsignal(signal.SIGTERM)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        stop: list[int] = []
        restore = catch_stop_signals(stop)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # the first Ctrl-C: noted, and the next one acts at once
        assert stop == [signal.SIGTERM, signal.SIGINT] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        restore()
        assert signal.getsignal(signal.SIGTERM) == before_term
        Trainer(config_for(oracle_bank, "iterations=2"), tmp_path / "run", progress=False).train()
        assert signal.getsignal(signal.SIGTERM) == before_term  # after training, SIGTERM ends the process again
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous_int)
