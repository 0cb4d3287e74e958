"""`hifa report` on a suite with several seeds: runs/<method>/<slug>[.seed<N>]/, each prompt's value
the mean over its seeds, the summary across prompts, the spread between seeds, and every seed's run
shown (status, cards) and exported (runs.json, curves.csv, per_prompt.csv)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from html import escape
from pathlib import Path

import pytest

from hifa.cli import main
from hifa.report.collect import collect
from hifa.report.tables import prompt_table
from hifa.run_names import parse_run_name, run_name
from tests.report_fixture import GROUNDTRUTH, PROMPTS, make_seeded_suite

SHIFTS = {0: 0.0, 1: 2.0, 2: 4.0}  # seed -> PSNR added to the fixture's ground truth
FAILED = (("dreamfusion", "snowman", 2, "mesh"),)  # seed 2 of one prompt failed: no evaluation


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = make_seeded_suite(tmp_path_factory.mktemp("results") / "seeds", SHIFTS, failed=FAILED)
    assert main(["report", str(root)]) == 0
    return root


def psnr(method: str, slug: str, seed: int) -> float:
    return GROUNDTRUTH[(method, slug)]["psnr"] + SHIFTS[seed]


def sample_sd(xs: list[float]) -> float:
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def test_run_names_round_trip():
    assert run_name("a-green-torus") == "a-green-torus" and run_name("a-green-torus", 12) == "a-green-torus.seed12"
    for slug, seed in (("snowman", 0), ("snowman", 1), ("a-b-c", 2**40)):
        assert parse_run_name(run_name(slug, seed)) == (slug, seed)
    for bad in ("snowman.seed0", "snowman.seed", "snowman.seed-1", "a.b", "snowman.seed01"):
        assert parse_run_name(bad) is None, bad
    with pytest.raises(ValueError):
        run_name("snowman", -1)


def test_each_prompt_is_the_mean_over_its_seeds(suite):
    s = collect(suite)
    assert s.seeds == [0, 1, 2] and s.multi_seed and len(s.runs) == 2 * 2 * 3
    value = s.value("hifa", "snowman", "psnr")
    xs = [psnr("hifa", "snowman", seed) for seed in SHIFTS]
    assert value.n == 3 and math.isclose(value.mean, sum(xs) / 3) and math.isclose(value.se, sample_sd(xs) / math.sqrt(3))
    failed_one = s.value("dreamfusion", "snowman", "psnr")  # seed 2 failed: the mean of seeds 0 and 1
    assert failed_one.n == 2 and math.isclose(failed_one.mean, (psnr("dreamfusion", "snowman", 0) + psnr("dreamfusion", "snowman", 1)) / 2)
    table = prompt_table(s, "psnr", ["hifa", "dreamfusion"])
    cells = dict(table.rows)
    assert math.isclose(cells["hifa"][list(PROMPTS).index("snowman")].mean, value.mean)
    assert cells["dreamfusion"][list(PROMPTS).index("snowman")].n == 2
    assert "(n=2)" in (suite / "report" / "report.md").read_text()  # a prompt with fewer seeds says so


def test_summary_is_across_prompts_of_the_seed_means_with_the_seed_spread(suite):
    document = json.loads((suite / "metrics.json").read_text())
    assert document["runs"] == {"runs": 12, "complete": 11, "incomplete": 0, "failed": 1, "seeds": 3}
    means = {slug: sum(psnr("hifa", slug, seed) for seed in SHIFTS) / 3 for slug in PROMPTS}
    entry = document["methods"]["hifa"]["psnr"]
    assert entry["n"] == 2 and math.isclose(entry["mean"], sum(means.values()) / 2)
    assert math.isclose(entry["se"], sample_sd(list(means.values())) / math.sqrt(2))
    assert math.isclose(entry["seed_sd"], 2.0)  # shifts 0, 2, 4: sample s.d. 2 in every prompt
    spread = document["methods"]["dreamfusion"]["psnr"]["seed_sd"]  # variances 4 (three seeds) and 2 (two seeds)
    assert math.isclose(spread, math.sqrt((4 + 2) / 2))
    assert document["methods"]["dreamfusion"]["runs_failed"] == 1 and document["methods"]["hifa"]["runs_complete"] == 6


def test_every_seed_is_shown_and_exported(suite):
    report = suite / "report"
    page, markdown = (report / "index.html").read_text(), (report / "report.md").read_text()
    assert "2 methods × 2 prompts × 3 seeds" in page and "2 methods × 2 prompts × 3 seeds" in markdown
    assert "mean over its 3 seeds, 0, 1, 2" in page and escape("Each prompt's value: the mean ± s.e. over its seeds") in page
    for seed in SHIFTS:
        assert f"HiFA · seed {seed}" in page and f"seed {seed}: " in markdown
        folder = run_name("snowman", seed)
        assert f'href="../runs/hifa/{folder}/mesh/mesh.glb"' in page
        assert len(list((report / "assets" / "hifa" / folder).glob("rgb_*.png"))) == 4, folder  # each seed's own thumbnails
    assert "seed 2: " in page and "failed at mesh" in page
    runs = json.loads((report / "runs.json").read_text())["runs"]
    assert sorted((r["method"], r["prompt_slug"], r["seed"]) for r in runs) == sorted(
        (m, slug, seed) for m in ("hifa", "dreamfusion") for slug in PROMPTS for seed in SHIFTS)
    with (report / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["method"], r["prompt_slug"], r["seed"]) for r in rows} == {
        (m, slug, str(seed)) for m in ("hifa", "dreamfusion") for slug in PROMPTS for seed in SHIFTS}
    with (suite / "paper" / "per_prompt.csv").open() as handle:
        long = [r for r in csv.DictReader(handle) if r["metric"] == "psnr"]
    assert {(r["method"], r["prompt_slug"], int(r["seed"])): float(r["value"]) for r in long} == {
        (m, slug, seed): psnr(m, slug, seed) for m in ("hifa", "dreamfusion") for slug in PROMPTS for seed in SHIFTS
        if (m, slug, seed, "mesh") not in FAILED}
    caption = (suite / "paper" / "table_main.tex").read_text()
    assert "2 prompts $\\times$ 3 seeds" in caption and "each prompt's value the mean over its seeds" in caption


def test_a_failed_seed_is_left_out_even_with_scores(tmp_path):
    """A run with a FAILED marker but an evaluation (failed in a later attempt) counts for none of the means."""
    root = make_seeded_suite(tmp_path / "f", {0: 0.0, 1: 2.0, 2: 10.0}, methods=("hifa",))
    (root / "runs" / "hifa" / run_name("snowman", 2) / "FAILED").write_text("train: RuntimeError: out of memory\n")
    s = collect(root)
    assert s.run("hifa", "snowman", 2).failed and "psnr" in s.run("hifa", "snowman", 2).metrics
    value = s.value("hifa", "snowman", "psnr")
    assert value.n == 2 and math.isclose(value.mean, psnr("hifa", "snowman", 0) + 1.0)
    assert s.seed_values("hifa", "snowman", "psnr").keys() == {0, 1}


def test_seeds_the_manifest_does_not_name_are_left_out(tmp_path):
    """A suite that went back from seeds [0, 1] to [0]: seed 1's folders stay on disk, out of every mean."""
    root = make_seeded_suite(tmp_path / "back", {0: 0.0, 1: 2.0}, methods=("hifa",))
    manifest = json.loads((root / "suite.json").read_text())
    (root / "suite.json").write_text(json.dumps({**manifest, "seeds": [0]}))
    s = collect(root)
    assert s.seeds == [0] and not s.multi_seed and len(s.runs) == 2
    assert s.value("hifa", "snowman", "psnr").mean == psnr("hifa", "snowman", 0)
    assert "runs/hifa/snowman.seed1: seed 1 is not among the suite's seeds (0); left out" in s.problems
    assert main(["report", str(root)]) == 0
    assert "problem: runs/hifa/snowman.seed1: seed 1 is not among" in (root / "report" / "report.md").read_text()


def test_seed_folders_are_found_without_a_manifest(tmp_path):
    root = make_seeded_suite(tmp_path / "found", {0: 0.0, 3: 1.0}, methods=("hifa",))
    (root / "suite.json").unlink()
    shutil.copytree(root / "runs" / "hifa" / "snowman", root / "runs" / "hifa" / "snowman.seed0")  # not a run folder name: ignored
    s = collect(root)
    assert s.seeds == [0, 3] and sorted(s.slugs) == sorted(PROMPTS)
    assert math.isclose(s.value("hifa", "snowman", "psnr").mean, psnr("hifa", "snowman", 0) + 0.5)
    assert s.run("hifa", "snowman", 3).path == root / "runs" / "hifa" / "snowman.seed3"


def test_a_missing_seed_is_marked_not_dropped(tmp_path):
    root = make_seeded_suite(tmp_path / "gap", {0: 0.0, 1: 2.0}, methods=("hifa",))
    shutil.rmtree(root / "runs" / "hifa" / run_name("snowman", 1))
    s = collect(root)
    missing = s.run("hifa", "snowman", 1)
    assert missing.status == "incomplete" and missing.badge.startswith("missing: train")
    value = s.value("hifa", "snowman", "psnr")
    assert value.n == 1 and value.se is None and value.mean == psnr("hifa", "snowman", 0)
    assert main(["report", str(root)]) == 0
    assert "seed 1: " in (root / "report" / "report.md").read_text()


def test_one_seed_keeps_the_single_run_layout(tmp_path):
    """A suite.json with seeds [0] reports exactly as one without seeds: a run's value keeps its s.e. over views."""
    root = make_seeded_suite(tmp_path / "one", {0: 0.0}, methods=("hifa",))
    s = collect(root)
    assert s.seeds == [0] and not s.multi_seed
    value = s.value("hifa", "snowman", "clip_score/ViT-B-32")
    assert value.se is not None and value.n is None  # the s.e. over views the run reported, not one over seeds
    assert main(["report", str(root)]) == 0
    assert "seed" not in (root / "report" / "report.md").read_text().split("## Notes")[0]


def test_grids_show_a_complete_seed(tmp_path):
    from hifa.report.figures import shown_run

    root = make_seeded_suite(tmp_path / "g", {0: 0.0, 1: 2.0}, methods=("hifa",), failed=(("hifa", "snowman", 0, "mesh"),))
    s = collect(root)
    assert shown_run(s, "hifa", "snowman").seed == 1 and shown_run(s, "hifa", "a-red-ball-on-blue-box").seed == 0
    table = prompt_table(s, "psnr", ["hifa"])
    assert table.rows[0][1][list(PROMPTS).index("snowman")].n == 1
