"""The report's paired comparison: each method minus HiFA prompt by prompt, its mean ± s.e., the
prompts where it is better, and the exact sign test."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from hifa.cli import main
from hifa.report.collect import collect
from hifa.report.paired import paired, paired_rows, reference_of, sign_test
from tests.report_fixture import GROUNDTRUTH, PROMPTS, make_seeded_suite, make_suite


def binomial_two_sided(better: int, worse: int) -> float:
    """Two-sided p by summing every outcome no more likely than the observed one (the textbook definition)."""
    n = better + worse
    probs = [math.comb(n, k) / 2**n for k in range(n + 1)]
    observed = probs[better]
    return min(1.0, sum(p for p in probs if p <= observed * (1 + 1e-12)))


@pytest.mark.parametrize("better,worse", [(3, 0), (0, 3), (9, 1), (5, 5), (7, 3), (37, 0), (20, 17), (0, 1)])
def test_sign_test_is_the_exact_binomial(better, worse):
    assert math.isclose(sign_test(better, worse), binomial_two_sided(better, worse), rel_tol=1e-12)


def test_sign_test_known_values():
    assert sign_test(3, 0) == 0.25 and sign_test(0, 0) == 1.0 and sign_test(5, 5) == 1.0
    assert math.isclose(sign_test(9, 1), 2 * 11 / 1024)


def test_differences_are_per_prompt_and_directional(tmp_path):
    suite = collect(make_suite(tmp_path / "s", methods=("hifa", "dreamfusion"), failed=(), missing=()))
    assert reference_of(suite, suite.methods) == "hifa"
    psnr = paired(suite, "dreamfusion", "hifa", "psnr")  # higher is better
    diffs = [GROUNDTRUTH[("dreamfusion", s)]["psnr"] - GROUNDTRUTH[("hifa", s)]["psnr"] for s in PROMPTS]
    assert psnr.n == 2 and math.isclose(psnr.mean, sum(diffs) / 2) and math.isclose(psnr.se, abs(diffs[0] - diffs[1]) / 2)
    assert (psnr.better, psnr.worse) == (0, 2) and psnr.p_sign == 0.5
    chamfer = paired(suite, "dreamfusion", "hifa", "chamfer")  # lower is better: dreamfusion's larger Chamfer is worse
    assert chamfer.mean > 0 and (chamfer.better, chamfer.worse) == (0, 2)
    wall = paired(suite, "dreamfusion", "hifa", "wall_time_s")  # no direction: no counts, no test
    assert wall.mean == -30.0 and wall.better is None and wall.p_sign is None


def test_seeds_pair_on_the_seeds_both_methods_have(tmp_path):
    suite = collect(make_seeded_suite(tmp_path / "s", {0: 0.0, 1: 2.0}, failed=(("dreamfusion", "snowman", 1, "mesh"),)))
    result = paired(suite, "dreamfusion", "hifa", "psnr")
    ball = (15.0 + 17.0) / 2 - (20.0 + 22.0) / 2  # both seeds on both sides
    snowman = 16.0 - 22.0  # dreamfusion's seed 1 failed: seed 0 against seed 0, not against hifa's mean of 22 and 24
    assert result.n == 2 and math.isclose(result.mean, (ball + snowman) / 2) and math.isclose(result.se, abs(ball - snowman) / 2)


def test_the_report_shows_the_paired_table(tmp_path):
    root = make_suite(tmp_path / "s", methods=("hifa", "dreamfusion", "hifa-no-rgb"), failed=(), missing=())
    assert main(["report", str(root)]) == 0
    reference, columns, rows = paired_rows(collect(root), ["hifa", "dreamfusion", "hifa-no-rgb"], ["psnr"])
    assert reference == "hifa" and columns == ["PSNR (dB) ↑"] and [m for m, _ in rows] == ["dreamfusion", "hifa-no-rgb"]
    assert rows[0][1] == ["-5.50 ± 0.50 · better on 0, worse on 2 (p = 0.50)"]
    page, markdown = (root / "report" / "index.html").read_text(), (root / "report" / "report.md").read_text()
    assert 'href="#paired">Against HiFA</a>' in page and 'id="paired"' in page
    for text in (page, markdown):
        assert "Against HiFA" in text and "-5.50 ± 0.50 · better on 0, worse on 2 (p = 0.50)" in text
    with (root / "paper" / "paired.csv").open() as handle:
        table = {(r["method"], r["metric"]): r for r in csv.DictReader(handle)}
    row = table[("dreamfusion", "psnr")]
    assert row["reference"] == "hifa" and float(row["mean_difference"]) == -5.5 and row["better"] == "0" and row["n"] == "2"
    assert float(row["p_sign"]) == 0.5
    latex = (root / "paper" / "table_paired.tex").read_text()
    assert "Method $-$ HiFA & PSNR (dB) $\\uparrow$" in latex and "DreamFusion & $-$5.50 $\\pm$ 0.50 (0/2) &" in latex
    assert "$^*$ " not in latex.split("\\midrule")[1]  # two prompts: no sign test reaches p < 0.05


def test_latex_stars_a_sign_test_below_five_percent():
    from hifa.report.paired import Paired, PairedTable
    from hifa.report.paper import latex_paired

    table = PairedTable("hifa", ["psnr"], [("dreamfusion", [Paired(-2.0, 0.5, 6, 0, 6, sign_test(0, 6))]),
                                           ("hifa-no-rgb", [Paired(-1.0, 0.5, 5, 0, 5, sign_test(0, 5))])])
    body = latex_paired(table, "caption", "tab:x").split("\\midrule")[1]
    assert "DreamFusion & $-$2.00 $\\pm$ 0.50 (0/6)$^*$ \\\\" in body  # p = 1/32
    assert "HiFA w/o rgb & $-$1.00 $\\pm$ 0.50 (0/5) \\\\" in body  # p = 1/16


def test_one_method_has_no_paired_table(tmp_path):
    root = make_suite(tmp_path / "s", methods=("hifa",), failed=(), missing=())
    assert paired_rows(collect(root), ["hifa"], ["psnr"]) is None
    assert main(["report", str(root)]) == 0
    assert "Against" not in (root / "report" / "report.md").read_text() and "#paired" not in (root / "report" / "index.html").read_text()
    assert not Path(root / "paper" / "paired.csv").exists() and not Path(root / "paper" / "table_paired.tex").exists()
