"""`hifa reproduce RUN`: a finished tiny oracle run trained again from its config, compared weight by weight."""

import json

import pytest
import torch

from hifa.cli import main
from hifa.errors import HifaError
from hifa.reproduce import reproduce, summary_line, weight_difference
from hifa.run_folder import WEIGHTS_FILE
from hifa.training import run_training
from tests.test_train import tiny_config


@pytest.fixture
def one_thread():
    """One intra-op thread: the same reductions in the same order in both trainings, whatever the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_run_reproduces_bit_for_bit_on_the_same_machine(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    run_training(tiny_config(tmp_path, extra=["tracking.enabled=false"]), run, progress=False)
    assert main(["reproduce", str(run), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reproduced bit for bit: every weight identical; held-out PSNR ") and "dB in both, the same setting" in out
    record = json.loads((tmp_path / "again" / "reproduce.json").read_text())
    assert record["identical"] is True and record["max_abs_weight_difference"] == 0.0 and record["setting_changes"] == []
    assert record["scores"]["steps"] == {"original": 6, "reproduction": 6}
    assert not (tmp_path / "again" / "run.json").exists()  # no MLflow run for a check
    # Two existing runs compared without training: another method's run is no reproduction (exit 1).
    other = tmp_path / "other"
    run_training(tiny_config(tmp_path, "dreamfusion", extra=["tracking.enabled=false"]), other, progress=False)
    capsys.readouterr()
    assert main(["reproduce", str(run), "--against", str(tmp_path / "again")]) == 0
    assert capsys.readouterr().out.startswith("reproduced bit for bit")
    assert main(["reproduce", str(run), "--against", str(other)]) == 1
    text = capsys.readouterr().out
    assert text.startswith("not a reproduction: the configs differ in cameras.uniform_sphere_rate, depth.weight, ") and ", ... (" in text


def test_a_changed_weight_is_found_and_named(tmp_path, one_thread):
    run = tmp_path / "run"
    run_training(tiny_config(tmp_path, extra=["tracking.enabled=false"]), run, progress=False)
    result = reproduce(run, tmp_path / "again", progress=False)
    assert result["identical"]
    # Perturb one weight of the reproduction: the comparison reports its size and its tensor.
    weights = torch.load(tmp_path / "again" / WEIGHTS_FILE, weights_only=True)
    name = sorted(weights["renderer"])[0]
    weights["renderer"][name] = weights["renderer"][name].clone()
    weights["renderer"][name].view(-1)[0] += 0.25
    torch.save(weights, tmp_path / "again" / WEIGHTS_FILE)
    worst, where = weight_difference(run, tmp_path / "again")
    assert worst == pytest.approx(0.25, rel=1e-6) and where == name
    text = summary_line({**result, "identical": False, "max_abs_weight_difference": worst, "largest_in": where,
                         "setting_changes": ["device A -> B"]})
    assert text.startswith(f"reproduced within 0.25 (largest difference in {name})") and "settings changed: device A -> B" in text


def test_reproduce_needs_a_finished_run_and_another_folder(tmp_path):
    run = tmp_path / "run"
    config = tiny_config(tmp_path, extra=["tracking.enabled=false"])
    run_training(config, run, progress=False)
    with pytest.raises(HifaError, match="another folder"):
        reproduce(run, run, progress=False)
    (run / WEIGHTS_FILE).unlink()
    with pytest.raises(HifaError, match="no finished training"):
        reproduce(run, tmp_path / "again", progress=False)
    assert main(["reproduce", str(tmp_path / "nowhere")]) == 2


def test_reproduce_against_a_damaged_run_and_a_bad_tolerance_are_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run_training(tiny_config(tmp_path, extra=["tracking.enabled=false"]), run, progress=False)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    (damaged / WEIGHTS_FILE).write_bytes((run / WEIGHTS_FILE).read_bytes()[:1000])
    assert main(["reproduce", str(run), "--against", str(damaged)]) == 2
    assert capsys.readouterr().err.strip() == f"hifa: error: cannot read {damaged / WEIGHTS_FILE}: RuntimeError (truncated or corrupt)"
    for bad in ("-1", "nan"):
        with pytest.raises(SystemExit) as stop:
            main(["reproduce", str(run), "--against", str(run), "--tolerance", bad])
        assert stop.value.code == 2 and "argument --tolerance: must be >= 0" in capsys.readouterr().err
