"""R/weights.pt: a finished training's evaluation weights. The steps after training read a run from it
alone (what a `dvc pull` brings: DVC ignores checkpoint.pt) exactly as from the checkpoint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hifa.cli import main
from hifa.errors import HifaError
from hifa.run_folder import CHECKPOINT_FILE, WEIGHTS_FILE, WEIGHTS_FORMAT, load_run
from hifa.training import resolve_config, run_training
from tests.test_steps import PROMPT, TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["hifa", "dreamfusion"])  # dreamfusion keeps an EMA: its weights are the EMA's
def trained(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(f"weights-{request.param}")
    overrides = [*TINY, f"prior.oracle.cache_dir={root / 'cache'}", "tracking.enabled=false"]
    run_training(resolve_config(request.param, PROMPT, "oracle", overrides=overrides), root / "run", progress=False)
    return root / "run"


def without_checkpoint(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    (dest / CHECKPOINT_FILE).unlink()
    return dest


def test_weights_hold_the_evaluation_renderer_and_no_optimiser_state(trained):
    weights = torch.load(trained / WEIGHTS_FILE, weights_only=True)
    checkpoint = torch.load(trained / CHECKPOINT_FILE, weights_only=True)
    assert weights["format"] == WEIGHTS_FORMAT and weights["step"] == checkpoint["step"] == 6
    assert set(weights) == {"format", "step", "config", "renderer"}  # no optimiser state
    assert weights["config"] == checkpoint["config"]
    assert (trained / WEIGHTS_FILE).stat().st_size < (trained / CHECKPOINT_FILE).stat().st_size / 2


def test_a_run_without_its_checkpoint_loads_the_same_renderer(trained, tmp_path):
    config_a, full, step_a = load_run(trained, "cpu")
    config_b, light, step_b = load_run(without_checkpoint(trained, tmp_path / "pulled"), "cpu")
    assert config_a == config_b and step_a == step_b == 6
    a, b = full.state_dict(), light.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if config_a.optim.ema_decay:  # the EMA weights differ from the last step's: the weights file must hold the EMA's
        raw = torch.load(trained / CHECKPOINT_FILE, weights_only=True)["renderer"]
        assert any(not torch.equal(raw[k], b[k]) for k in raw if raw[k].is_floating_point())


def extended(run: Path, iterations: int, until: int | None = None) -> None:
    """Train a finished run on to `iterations` (stopping after step `until`, checkpointed, when given)."""
    from hifa.training import Trainer

    cache = run.parent / "cache"
    config = resolve_config(load_run(run, "cpu")[0].preset, PROMPT, "oracle",
                            overrides=[*TINY, f"iterations={iterations}", f"prior.oracle.cache_dir={cache}", "tracking.enabled=false"])
    if until is None:
        run_training(config, run, resume=True, progress=False)
    else:
        Trainer(config, run, progress=False).train(until=until)


def test_a_training_with_steps_left_takes_the_finished_products_away(trained, tmp_path):
    """Extending a finished run: until it finishes again, steps read its checkpoint, and nothing calls it done."""
    run = tmp_path / "ext"
    shutil.copytree(trained, run)
    extended(run, iterations=9, until=7)
    assert not (run / WEIGHTS_FILE).exists() and not (run / "train_summary.json").exists()
    assert load_run(run, "cpu")[2] == 7  # from checkpoint.pt
    extended(run, iterations=9)
    assert torch.load(run / WEIGHTS_FILE, weights_only=True)["step"] == 9 and (run / "train_summary.json").is_file()


def test_weights_win_over_a_checkpoint_of_another_version(trained, tmp_path):
    """`dvc checkout` of an older version brings back its config.yaml and weights.pt; the newer checkpoint.pt
    (ignored by DVC) stays. The steps must read the checked-out version; a mixed-up folder is refused."""
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    extended(run, iterations=8)  # the newer version: checkpoint, weights and config at 8 steps
    for name in ("config.yaml", WEIGHTS_FILE):  # what the checkout restores
        shutil.copy2(old / name, run / name)
    config, _, step = load_run(run, "cpu")
    assert step == 6 and config.iterations == 6
    shutil.copy2(trained / "config.yaml", run / "config.yaml")
    (run / WEIGHTS_FILE).unlink()  # now only the 8-step checkpoint beside the 6-step config
    with pytest.raises(HifaError, match=r"checkpoint\.pt was trained with another config than .*config\.yaml \(differs in iterations[,)]"):
        load_run(run, "cpu")


def test_steps_run_on_a_pulled_run(trained, tmp_path):
    run = without_checkpoint(trained, tmp_path / "pulled")
    assert main(["render", str(run), "--views", "1", "--resolution", "8", "--quiet"]) == 0
    assert (run / "render" / "render.json").is_file() and not (run / CHECKPOINT_FILE).exists()


def test_without_checkpoint_or_weights_the_error_names_both(trained, tmp_path):
    run = without_checkpoint(trained, tmp_path / "bare")
    (run / WEIGHTS_FILE).unlink()
    with pytest.raises(HifaError, match=rf"checkpoint\.pt is missing: .*a finished run's {WEIGHTS_FILE} would do too"):
        load_run(run, "cpu")


def test_dvc_versions_the_weights_not_the_checkpoints():
    """.dvcignore keeps checkpoint.pt (optimiser state, several times the weights) out of DVC's cache and remote."""
    dvc = str(Path(sys.executable).parent / "dvc")
    for results in ("results/demo", "results/paper", "elsewhere/mine"):
        run = f"{results}/runs/hifa/a-green-torus.seed1"
        for dropped in ("checkpoint.pt", ".checkpoint.pt.k3j9x1.tmp", "render/.render.json.abc.tmp"):
            assert subprocess.run([dvc, "check-ignore", "-q", f"{run}/{dropped}"], cwd=ROOT).returncode == 0, dropped
        for kept in ("weights.pt", "train_summary.json", "mesh/mesh.glb"):
            assert subprocess.run([dvc, "check-ignore", "-q", f"{run}/{kept}"], cwd=ROOT).returncode == 1, kept


def test_a_new_training_in_the_folder_drops_the_old_weights(trained, tmp_path, monkeypatch):
    """A pulled run (weights, no checkpoint) trained again: until it finishes, no weights stand in for it."""
    from hifa.training import Trainer

    run = without_checkpoint(trained, tmp_path / "again")
    config = resolve_config("hifa", PROMPT, "oracle", overrides=[*TINY, "iterations=2", f"prior.oracle.cache_dir={tmp_path / 'cache'}",
                                                                  "tracking.enabled=false"])
    (run / "FAILED").write_text("train: an earlier attempt\n")
    seen = []
    original = Trainer.training_step

    def spy(self, step):
        seen.append(tuple((run / name).exists() for name in (WEIGHTS_FILE, "train_summary.json", "train_log.csv", "FAILED")))
        return original(self, step)

    monkeypatch.setattr(Trainer, "training_step", spy)
    run_training(config, run, resume=True, progress=False)
    assert seen[0] == (False, False, False, False)  # nothing of the earlier training, nor its failure, stands in for this one
    assert torch.load(run / WEIGHTS_FILE, weights_only=True)["step"] == 2
