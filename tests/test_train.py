"""Training end to end on tiny oracle runs: outputs, resume equality, NaN guard, CLI errors."""

import json
import subprocess
import sys

import pytest
import torch

from hifa.errors import HifaError
from hifa.provenance import read_sessions
from hifa.trainer import Trainer
from hifa.training import resolve_config, run_training

TINY = [
    "iterations=6", "resolution=16", "renderer.num_coarse=12", "renderer.num_fine=6", "checkpoint_every=3", "log_every=1",
    "val_every=3", "val_views=2", "val_resolution=16", "eval_views=2", "prior.oracle.resolution=16", "prior.oracle.views=24",
    "prior.oracle.uncond_views_per_scene=4", "field.grid.n_levels=4", "field.grid.log2_hashmap_size=12",
    "field.grid.finest_resolution=64", "mesh.resolution=32", "mesh.coarse_resolution=16",
]


def tiny_config(tmp_path, method="hifa", extra=()):
    overrides = [*TINY, f"prior.oracle.cache_dir={tmp_path / 'cache'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", *extra]
    return resolve_config(method, "a green torus", "oracle", overrides=overrides)


@pytest.mark.parametrize("method", ["hifa", "dreamfusion"])
def test_tiny_oracle_run_writes_every_output(tmp_path, method):
    run = tmp_path / "run"
    summary = run_training(tiny_config(tmp_path, method), run, progress=False)
    for name in ("config.yaml", "checkpoint.pt", "train_log.csv", "run.json", "train_summary.json", "final_views.png"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "validation").iterdir()) == ["step_000003.png", "step_000006.png"]
    assert summary["steps"] == 6 and isinstance(summary["heldout_psnr"], float)
    log = (run / "train_log.csv").read_text().splitlines()
    assert len(log) == 7 and "loss" in log[0]
    assert ("latent" in log[0]) == (method == "hifa") and ("sds" in log[0]) == (method == "dreamfusion")
    from mlflow.tracking import MlflowClient

    info = json.loads((run / "run.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    mlrun = client.get_run(info["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["preset"] == method
    assert len(client.get_metric_history(info["run_id"], "loss")) == 6
    # Provenance: one session from step 0 on this CPU, its commit and device also as the MLflow run's tags.
    (session,) = json.loads((run / "environment.json").read_text())["sessions"]
    assert session["from_step"] == 0 and session["device"]["type"] == "cpu" and session["packages"]["torch"] == torch.__version__
    assert session["checkpoints"] == {}  # the oracle world loads no pretrained model
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert session["code"]["commit"] == head
    assert mlrun.data.tags["mlflow.source.git.commit"] == head and mlrun.data.tags["hifa.device"] == session["device"]["name"]
    assert "environment.json" in {a.path for a in client.list_artifacts(info["run_id"])}


def test_resume_equals_an_uninterrupted_run(tmp_path):
    config = tiny_config(tmp_path, extra=["tracking.enabled=false"])
    straight = Trainer(config, tmp_path / "a", progress=False)
    straight.train()
    first = Trainer(config, tmp_path / "b", progress=False)
    first.train(until=3)
    del first
    resumed = Trainer(config, tmp_path / "b", progress=False)
    resumed.train()
    assert resumed.step == 6
    for (name, a), (_, b) in zip(straight.renderer.state_dict().items(), resumed.renderer.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert len(straight.log_rows) == len(resumed.log_rows) == 6
    for a, b in zip(straight.log_rows, resumed.log_rows):
        assert a.keys() == b.keys()
        for key in a.keys() - {"time_s"}:
            assert a[key] == pytest.approx(b[key], rel=1e-5, nan_ok=True), (a["step"], key)
    times = [row["time_s"] for row in resumed.log_rows]
    assert times == sorted(times) and times[3] > times[2] > 0  # time_s goes on from the checkpoint, not from 0
    # Each session that trained steps is recorded: one for the straight run, two (from steps 0 and 3) for the resumed one.
    assert [s["from_step"] for s in read_sessions(tmp_path / "a")] == [0]
    assert [s["from_step"] for s in read_sessions(tmp_path / "b")] == [0, 3]
    Trainer(config, tmp_path / "b", progress=False).train()  # finished: nothing to train, nothing recorded
    assert [s["from_step"] for s in read_sessions(tmp_path / "b")] == [0, 3]


def poison_step(trainer: Trainer, monkeypatch, step: int, poison) -> None:
    """Replace the trainer's loss terms at `step` by poison(terms)."""
    original = trainer.loss_terms

    def poisoned(at):
        terms, info = original(at)
        return (poison(terms) if at == step else terms), info

    monkeypatch.setattr(trainer, "loss_terms", poisoned)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, extra=["tracking.enabled=false", "checkpoint_every=1"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    poison_step(trainer, monkeypatch, 3, lambda terms: {**terms, "latent": terms["latent"] * float("nan")})
    with pytest.raises(HifaError, match=r"non-finite loss at step 3 \(latent\); stopped, the last good checkpoint \(step 2\)"):
        trainer.train()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 2


def test_nan_guard_can_skip_steps(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, extra=["tracking.enabled=false", "nan_policy=skip"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    poison_step(trainer, monkeypatch, 2, lambda terms: {**terms, "latent": terms["latent"] * float("nan")})
    trainer.train()
    assert trainer.step == 6 and trainer.log_rows[1].get("skipped") == 1.0
    assert all(torch.isfinite(p).all() for p in trainer.renderer.parameters())


def test_nan_guard_catches_a_non_finite_gradient_under_a_finite_loss(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, extra=["tracking.enabled=false", "nan_policy=skip"])
    trainer = Trainer(config, tmp_path / "run", progress=False)

    def infinite_gradient(terms):  # sqrt at exactly 0: the term's value is 0, its gradient is infinite
        total = sum(p.sum() for p in trainer.renderer.parameters())
        terms = {**terms, "poison": torch.sqrt(total - total.detach())}
        assert torch.isfinite(sum(terms.values()))
        return terms

    poison_step(trainer, monkeypatch, 2, infinite_gradient)
    trainer.train()
    assert trainer.log_rows[1].get("skipped") == 1.0 and trainer.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in trainer.renderer.parameters())


def test_existing_checkpoint_needs_resume(tmp_path):
    config = tiny_config(tmp_path, extra=["tracking.enabled=false"])
    run_training(config, tmp_path / "run", progress=False)
    with pytest.raises(HifaError, match="already holds a checkpoint; pass --resume"):
        run_training(config, tmp_path / "run", progress=False)


def test_an_out_folder_that_is_a_file_fails_before_anything_is_written(tmp_path):
    config = tiny_config(tmp_path, extra=["tracking.enabled=false"])
    taken = tmp_path / "taken"
    taken.write_text("a file")
    with pytest.raises(HifaError, match=f"^--out {taken} is a file, not a folder$"):
        run_training(config, taken, progress=False)
    with pytest.raises(HifaError, match=f"^--out {taken / 'run'}: {taken} is a file, not a folder$"):
        run_training(config, taken / "run", progress=False)
    assert taken.read_text() == "a file"


def test_a_failed_start_leaves_no_mlflow_run_for_the_next_attempt(tmp_path):
    """A missing model fails before any tracking; a run.json left without a checkpoint is not reused."""
    from mlflow.tracking import MlflowClient

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    missing = resolve_config("hifa", "a blue cat", f"stable-diffusion:{tmp_path / 'no-such-model'}", overrides=[f"tracking.tracking_uri={db}"])
    with pytest.raises(HifaError, match="no-such-model"):
        run_training(missing, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlflow.db").exists()

    # An earlier attempt that died before its first checkpoint, with another prompt in its MLflow run.
    stale = tiny_config(tmp_path, extra=["iterations=2", "checkpoint_every=100"])
    from hifa.tracking import Tracker

    old = Tracker.start(db, stale.tracking.experiment, "run", {"prompt": "a blue cat"}, {"prompt": "a blue cat"}, tmp_path / "run")
    old.set_terminated("FAILED")
    run_training(stale, tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["run_id"] != old.run_id
    client = MlflowClient(db)
    fresh = client.get_run(record["run_id"])
    assert fresh.data.params["prompt"] == "a green torus" and fresh.info.status == "FINISHED"
    assert client.get_run(old.run_id).info.status == "FAILED"


def test_resume_names_the_steps_made_from_an_older_checkpoint(tmp_path, capsys):
    from hifa.cli import main

    run = tmp_path / "run"
    args = ["train", "--prompt", "a green torus", "--prior", "oracle", "--quiet", "--no-mlflow", "--out", str(run),
            *[f"--set={o}" for o in TINY], f"--set=prior.oracle.cache_dir={tmp_path / 'cache'}"]
    assert main([*args, "--set=iterations=3"]) == 0
    for step, marker in (("render", "render.json"), ("mesh", "mesh.json")):
        (run / step).mkdir()
        (run / step / marker).write_text(json.dumps({"step": 3}))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0  # trains on to 6
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err == [f"hifa: note: render/ (step 3), mesh/ (step 3) predate this training; make them again: hifa render {run}; hifa mesh {run}"]
    from hifa.provenance import cpu_name

    assert ": 6 steps in " in captured.out and f" s on {cpu_name()}, held-out PSNR " in captured.out  # the device, for the job's log


def test_same_config_ignores_tracking_and_names_what_changed(tmp_path, capsys):
    """What the workflow's train rule asks before resuming a checkpoint (a logging switch must not restart a training)."""
    from hifa.cli import main
    from hifa.configio import dump_yaml

    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(tiny_config(tmp_path)))
    base = ["train", "--prompt", "a green torus", "--prior", "oracle", *[f"--set={o}" for o in TINY],
            f"--set=prior.oracle.cache_dir={tmp_path / 'cache'}", f"--set=tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    capsys.readouterr()
    assert main([*base, "--same-config", str(saved)]) == 0
    assert main([*base, "--no-mlflow", "--set=tracking.experiment=renamed", "--same-config", str(saved)]) == 0
    assert main([*base, "--set=iterations=7", "--set=optim.lr=0.02", "--same-config", str(saved)]) == 1
    assert main([*base, "--same-config", str(tmp_path / "missing.yaml")]) == 1
    assert capsys.readouterr().out.splitlines() == ["same config", "same config", "changed: iterations, optim.lr", "changed: (unreadable)"]
    assert not (tmp_path / "mlflow.db").exists()  # a question, not a run


def test_a_failure_after_finalize_marks_the_mlflow_run_failed_with_its_queued_metrics(tmp_path, monkeypatch):
    """The tracker writes from a background thread: every way out of a training must flush it and mark the run."""
    import json

    from mlflow.tracking import MlflowClient

    import hifa.training

    def disk_full(path, payload):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(hifa.training, "write_json_atomic", disk_full)
    run = tmp_path / "run"
    with pytest.raises(OSError):
        run_training(tiny_config(tmp_path), run, progress=False)
    record = json.loads((run / "run.json").read_text())
    logged = MlflowClient(record["tracking_uri"]).get_run(record["run_id"])
    assert logged.info.status == "FAILED"
    assert "heldout_psnr" in logged.data.metrics and "loss" in logged.data.metrics  # the summary's and the last log row's


def test_same_config_takes_keys_an_older_config_lacks_as_their_defaults_and_ignores_mesh_settings(tmp_path, capsys):
    """A checkpoint written before a setting existed must resume: the workflow would otherwise train it again from step 0."""
    import yaml

    from hifa.cli import main
    from hifa.configio import dump_yaml

    older = yaml.safe_load(dump_yaml(tiny_config(tmp_path)))
    for key in ("texture_size", "colour_depth"):  # what a config.yaml of session 12 lacked
        del older["mesh"][key]
    del older["renderer"]["chunk_rays"]
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(older))
    base = ["train", "--prompt", "a green torus", "--prior", "oracle", *[f"--set={o}" for o in TINY],
            f"--set=prior.oracle.cache_dir={tmp_path / 'cache'}", f"--set=tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    capsys.readouterr()
    assert main([*base, "--same-config", str(saved)]) == 0
    assert main([*base, "--set=mesh.threshold=20", "--set=mesh.texture_size=64", "--same-config", str(saved)]) == 0
    assert main([*base, "--set=renderer.chunk_rays=1024", "--same-config", str(saved)]) == 1
    assert capsys.readouterr().out.splitlines() == ["same config", "same config", "changed: renderer.chunk_rays"]


def test_resume_reads_keys_an_older_checkpoint_lacks_as_defaults_and_ignores_mesh_settings(tmp_path, caplog):
    import logging
    from dataclasses import replace

    config = tiny_config(tmp_path, extra=["tracking.enabled=false"])
    run = tmp_path / "run"
    Trainer(config, run, progress=False).train(until=3)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["config"]["field"]["normal_eps"], state["config"]["mesh"]["texture_size"]  # as a checkpoint of an older version
    torch.save(state, run / "checkpoint.pt")
    later = replace(config, mesh=replace(config.mesh, threshold=20.0))
    with caplog.at_level(logging.WARNING, logger="hifa"):
        assert Trainer(later, run, progress=False).train()["steps"] == config.iterations
    assert "changed settings" not in caplog.text and "another asset" not in caplog.text


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    config = tiny_config(tmp_path, extra=["tracking.enabled=false"])
    Trainer(config, tmp_path / "run", progress=False).train(until=3)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(HifaError, match=r"cannot read checkpoint .*\(truncated or corrupt\)"):
        Trainer(config, tmp_path / "run", progress=False).train()


def cli(*args):
    return subprocess.run([sys.executable, "-m", "hifa.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "nerfacto"], "hifa: error: unknown method 'nerfacto'"),
        (["--set", "optim.lrr=1"], "hifa: error: config 'optim.lrr': unknown key"),
        (["--prompt", ""], "hifa: error: the prompt is empty"),
        (["--prompt", "", "--print-config"], "hifa: error: the prompt is empty"),
        (["--prompt", "a blue cat", "--print-config"], "hifa: error: the oracle prior has no scene for the prompt 'a blue cat'"),
        (["--set", "preset=dreamfusion"], "hifa: error: --set sets preset to 'dreamfusion' but --method gives 'hifa'; use --method instead"),
    ],
)
def test_train_cli_errors_are_one_line(tmp_path, args, message):
    base = {"--prompt": "a green torus", "--method": "hifa"}
    argv = ["train", "--prior", "oracle", "--no-mlflow", "--out", str(tmp_path / "run")]
    for flag, value in base.items():
        if flag not in args:
            argv += [flag, value]
    proc = cli(*argv, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert lines[-1].startswith(message), proc.stderr


def test_malformed_yaml_cli_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: [1,\n")
    proc = cli("train", "--prompt", "a green torus", "--prior", "oracle", "--config", str(bad), "--no-mlflow", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "malformed YAML at line" in proc.stderr.strip().splitlines()[-1]


def test_two_concurrent_trainings_share_one_store(tmp_path):
    db = tmp_path / "shared.db"
    common = [f"--set={o}" for o in TINY] + [f"--set=prior.oracle.cache_dir={tmp_path / 'cache'}", f"--set=tracking.tracking_uri=sqlite:///{db}"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "hifa.cli", "train", "--prompt", "a green torus", "--method", m, "--prior", "oracle",
                          "--quiet", "--out", str(tmp_path / m), *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for m in ("hifa", "dreamfusion")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    for m in ("hifa", "dreamfusion"):
        run_id = json.loads((tmp_path / m / "run.json").read_text())["run_id"]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and len(client.get_metric_history(run_id, "loss")) == 6
