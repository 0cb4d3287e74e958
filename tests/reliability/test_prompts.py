"""Issue 8.2, hostile prompts through the CLI: quotes, backticks, $(...), ;, newlines, ../, absolute
paths, unicode, emoji, 10,000 characters, the empty string. Nothing runs, nothing lands outside
results/, no two prompts share a folder, long prompts are cut with one warning, empty ones are one line.
(The workflow side is in test_workflow_faults.py.)
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hifa import cli
from hifa.scenes import slugify
from tests.reliability.helpers import ROOT

LONG = " ".join(f"detail{i}" for i in range(2000))[:10_000]
HOSTILE = {
    "quotes": "a \"quoted\" 'prompt'",
    "backticks": "`touch PWNED-backticks`",
    "command substitution": "$(touch PWNED-subst)",
    "semicolon": "a torus; touch PWNED-semicolon",
    "newline": "a torus\ntouch PWNED-newline",
    "parent folders": "../../../../tmp/PWNED-parent",
    "absolute path": "/tmp/PWNED-absolute",
    "unicode": "a café on the Champs-Élysées, 東京 at night",
    "emoji": "🐕🛹",
    "10,000 characters": LONG,
}
EMPTY = {"empty": "", "blank": " \n\t "}
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def main(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


def no_pwned(where: Path) -> bool:
    return not list(where.rglob("PWNED*")) and not list(Path("/tmp").glob("PWNED*"))


def test_hifa_never_hands_text_to_a_shell():
    for path in (ROOT / "hifa").rglob("*.py"):
        source = path.read_text()
        assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|(?<![.\w])eval\(|(?<![.\w])exec\(", source), path


@pytest.mark.parametrize("name", [*HOSTILE, *EMPTY])
def test_oracle_world_rejects_unknown_and_empty_prompts_in_one_line_before_writing(name, tmp_path, monkeypatch, capsys):
    prompt = {**HOSTILE, **EMPTY}[name]
    monkeypatch.chdir(tmp_path)
    code, err = main(["train", "--prompt", prompt, "--prior", "oracle", "--quiet"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    if name in EMPTY:
        assert lines[0] == "hifa: error: the prompt is empty; give the text to generate from (--prompt)"
    else:
        assert lines[0].startswith("hifa: error: the oracle prior has no scene for the prompt '"), lines[0]
        assert "it knows: 'a red ball on a blue box'" in lines[0] and len(lines[0]) < 800
    assert not (tmp_path / "results").exists(), "nothing written: no run folder, no MLflow store"
    assert no_pwned(tmp_path)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_slugs_are_safe_folder_names(text):
    slug = slugify(text)
    assert SLUG.fullmatch(slug), slug
    out = (Path("/r/results/runs") / f"hifa-{slug[:60]}").resolve()
    assert out.parent == Path("/r/results/runs")


TINY_SD = [
    "iterations=1", "resolution=16", "renderer.num_coarse=8", "renderer.num_fine=4", "checkpoint_every=1", "log_every=1",
    "guidance.denoising_steps=1", "guidance.view_mode=none", "val_every=2", "val_views=1", "val_resolution=16", "eval_views=2", "field.grid.n_levels=4", "field.grid.log2_hashmap_size=12",
    "field.grid.finest_resolution=64", "field.grid.backend=torch", "depth.weight=0", "mesh.resolution=16", "mesh.threshold=null",
]


@pytest.mark.slow
def test_any_prompt_trains_in_its_own_folder_under_results(tiny_sd, tmp_path, monkeypatch, capsys, caplog):
    """The real (tiny) Stable Diffusion path takes any text: a 10,000-character prompt holding every hostile
    piece trains into results/runs/<method>-<slug>, is recorded verbatim, and is cut with one warning."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HIFA_MLFLOW_DB", str(tmp_path / "results" / "mlflow.db"))
    nasty = "\n".join(HOSTILE.values())[:10_000]
    argv = ["train", "--prior", f"stable-diffusion:{tiny_sd}", "--quiet", *[f"--set={o}" for o in TINY_SD]]
    with caplog.at_level(logging.WARNING):
        code, err = main([*argv, "--prompt", nasty], capsys)
    assert code == 0, err
    runs = list((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 1 and SLUG.fullmatch(runs[0].name), runs
    run = runs[0]
    assert yaml.safe_load((run / "config.yaml").read_text())["prompt"] == nasty
    truncated = [r for r in caplog.records if "text encoder takes" in r.getMessage()]
    assert len(truncated) == 1, [r.getMessage() for r in caplog.records]
    assert "tokens long; the text encoder takes 77" in truncated[0].getMessage()
    # MLflow recorded the run despite the prompt's length (tag and param values are cut to MLflow's limits).
    from mlflow.tracking import MlflowClient

    import json

    record = json.loads((run / "run.json").read_text())
    mlrun = MlflowClient(record["tracking_uri"]).get_run(record["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.data.tags["prompt"].startswith(nasty[:100])
    assert no_pwned(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"], "nothing outside results/"

    # Two prompts that slug alike (here: the same first 60 characters of slug) never share a folder:
    # the second is refused before anything is written, with or without --resume.
    other = nasty[:200] + " but something else"
    assert slugify(other)[:60] == slugify(nasty)[:60]
    for extra in ([], ["--resume"]):
        code, err = main([*argv, "--prompt", other, *extra], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{run.relative_to(tmp_path)} holds a run for another prompt ('a \"quoted\"" in err, err
    assert yaml.safe_load((run / "config.yaml").read_text())["prompt"] == nasty


def test_short_prompts_are_not_reported_as_truncated(tiny_sd, caplog):
    from hifa.cameras import orbit_cameras
    from hifa.guidance.stable_diffusion import StableDiffusionConfig, StableDiffusionPrior

    prior = StableDiffusionPrior(StableDiffusionConfig(model=str(tiny_sd)))
    with caplog.at_level(logging.WARNING):
        for mode in ("none", "suffix", "perpneg"):
            prior.conditions("a DSLR photo of a corgi", orbit_cameras(2), mode)
        for mode in ("none", "suffix", "perpneg"):
            prior.conditions(LONG, orbit_cameras(2), mode)
    messages = [r.getMessage() for r in caplog.records if "text encoder takes" in r.getMessage()]
    assert len(messages) == 1 and "detail0" in messages[0], messages
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
