"""Audit of the run folder's readers: resume identity checks, stale step markers, local artifact stores."""

import json
import logging
from pathlib import Path

import pytest
import torch

from hifa.configio import to_dict
from hifa.errors import HifaError
from hifa.resume_checks import check_resumable
from hifa.run_folder import WEIGHTS_FILE, load_run, local_artifact_dir, write_weights
from hifa.step_markers import stale_steps
from hifa.trainer import Trainer
from hifa.training import evaluation_state, resolve_config
from tests.test_train import tiny_config


def sd_config(model="org/model-a", *overrides):
    return resolve_config("hifa", "a blue cat", f"stable-diffusion:{model}", overrides=list(overrides))


def test_a_checkpoint_of_another_diffusion_model_is_another_asset(tmp_path):
    saved = to_dict(sd_config("org/model-a"))
    with pytest.raises(HifaError, match=r"trained with prior.model = 'org/model-a', this run asks for 'org/model-b'"):
        check_resumable(saved, sd_config("org/model-b"), tmp_path / "checkpoint.pt")


def test_a_resume_ignores_tracking_and_mesh_settings_but_names_other_changes(tmp_path, caplog):
    saved = to_dict(sd_config())
    with caplog.at_level(logging.WARNING, logger="hifa"):
        check_resumable(saved, sd_config("org/model-a", "tracking.experiment=other", "mesh.resolution=64"), tmp_path / "c.pt")
    assert "changed settings" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="hifa"):
        check_resumable(saved, sd_config("org/model-a", "optim.lr=0.02", "tracking.experiment=other"), tmp_path / "c.pt")
    assert "changed settings: optim.lr" in caplog.text and "tracking." not in caplog.text


@pytest.mark.parametrize("key,value", [("seed", 5), ("field.grid.n_levels", 5), ("prompt", "a red cat"),
                                       ("field.mlp_precision", "bf16"), ("field.grid.backend", "torch")])
def test_identity_keys_and_their_sub_keys_refuse_a_resume(tmp_path, key, value):
    saved = to_dict(sd_config())
    section, _, name = key.rpartition(".")
    target = saved
    for part in section.split(".") if section else ():
        target = target[part]
    target[name] = value
    if key in ("field.mlp_precision", "field.grid.backend"):  # how the field is computed, not what it is: a warning, no refusal
        check_resumable(saved, sd_config(), tmp_path / "c.pt")
        return
    with pytest.raises(HifaError, match=f"trained with {key} = .*another asset"):
        check_resumable(saved, sd_config(), tmp_path / "c.pt")


def write_marker(run: Path, step: str, marker: str, made) -> None:
    (run / step).mkdir(parents=True, exist_ok=True)
    (run / step / marker).write_text(json.dumps({"step": made}))


def test_stale_steps_are_those_made_at_another_training_step(tmp_path):
    """A marker from before the last step, or from a later step of a training since started over, no longer describes
    the weights; one made at the last step does; a marker without an integer step (true is no step) is left alone."""
    write_marker(tmp_path, "render", "render.json", 3)
    write_marker(tmp_path, "depth", "depth.json", 6)
    write_marker(tmp_path, "mesh", "mesh.json", 9)
    write_marker(tmp_path, "eval", "metrics.json", True)
    assert stale_steps(tmp_path, 6) == {"render": 3, "mesh": 9}


@pytest.mark.parametrize("uri,expected", [
    ("file:///data/artifacts/1/abc", "/data/artifacts/1/abc"),
    ("file://localhost/data/artifacts/1/abc", "/data/artifacts/1/abc"),
    ("file://otherhost/data/artifacts", None),
    ("s3://bucket/artifacts", None),
    ("", None),
])
def test_a_local_artifact_store_is_a_file_uri_on_this_host(uri, expected):
    got = local_artifact_dir({"artifact_uri": uri})
    assert got == (Path(expected) if expected else None)


def test_a_run_loads_its_ema_weights_from_the_checkpoint_and_from_weights_pt(oracle_bank, tmp_path):
    """What render, mesh and evaluate read: the EMA shadows where the run keeps an EMA, from either file."""
    config = tiny_config(oracle_bank, extra=["tracking.enabled=false", "optim.ema_decay=0.75"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    trainer.train(until=3)
    assert not (tmp_path / "run" / WEIGHTS_FILE).exists()
    _, from_checkpoint, step = load_run(tmp_path / "run", "cpu")
    assert step == 3
    assert all(torch.equal(p, e) for p, e in zip(from_checkpoint.parameters(), trainer.ema))
    assert any(not torch.equal(p, q) for p, q in zip(from_checkpoint.parameters(), trainer.renderer.parameters()))
    write_weights(tmp_path / "run", evaluation_state(trainer), trainer.step, config)
    (tmp_path / "run" / "checkpoint.pt").unlink()
    _, from_weights, step = load_run(tmp_path / "run", "cpu")
    assert step == 3 and all(torch.equal(p, e) for p, e in zip(from_weights.parameters(), trainer.ema))
