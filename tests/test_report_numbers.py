"""Best-cell marking, paired ties, per-view values with gaps, and the status line's pace and ETA."""

from __future__ import annotations

from pathlib import Path

import pytest

from hifa.report.collect import Suite
from hifa.report.paired import paired, sign_test
from hifa.report.run import Run, Value, to_value
from hifa.report.tables import prompt_table, summary_table
from hifa.status import Status, Training, recent_pace

SLUGS = ["a", "b", "c"]


def in_memory_suite(values: dict[str, dict[str, dict[str, float]]], methods: list[str]) -> Suite:
    """A one-seed suite whose runs hold the given metric values: values[method][slug][key]."""
    runs = {}
    for method in methods:
        for slug in SLUGS:
            run = Run(method, slug, Path("/nonexistent") / method / slug)
            run.steps = {"train": "done", "eval": "done"}
            run.metrics = {k: Value(v) for k, v in values.get(method, {}).get(slug, {}).items()}
            runs[(method, slug, 0)] = run
    keys = sorted({k for per_slug in values.values() for per_key in per_slug.values() for k in per_key})
    return Suite(Path("/nonexistent"), "mem", "oracle", methods, SLUGS, {s: f"prompt {s}" for s in SLUGS}, runs, keys, {}, {})


def test_a_column_with_one_value_marks_no_best():
    """Bold needs at least two rows with a value; with two, the higher PSNR is the best."""
    suite = in_memory_suite({"hifa": {s: {"psnr": 20.0} for s in SLUGS}}, ["hifa", "dreamfusion"])
    table = summary_table(suite, ["hifa", "dreamfusion"], ["psnr"])
    assert [cells[0].best for _, cells in table.rows] == [False, False]
    suite = in_memory_suite({"hifa": {s: {"psnr": 20.0} for s in SLUGS}, "dreamfusion": {s: {"psnr": 18.0} for s in SLUGS}},
                            ["hifa", "dreamfusion"])
    assert [cells[0].best for _, cells in summary_table(suite, ["hifa", "dreamfusion"], ["psnr"]).rows] == [True, False]


def test_per_prompt_cells_with_one_value_mark_no_best():
    """A prompt where only one method has a value has no bold cell; the lower Chamfer is the best elsewhere."""
    suite = in_memory_suite({"hifa": {"a": {"chamfer": 0.02}, "b": {"chamfer": 0.01}},
                             "dreamfusion": {"a": {"chamfer": 0.03}}}, ["hifa", "dreamfusion"])
    table = prompt_table(suite, "chamfer", ["hifa", "dreamfusion"])
    (_, hifa), (_, dream) = table.rows
    assert (hifa[0].best, dream[0].best) == (True, False)  # prompt a: both valued, lower is better
    assert (hifa[1].best, dream[1].best) == (False, False)  # prompt b: hifa alone
    assert (hifa[3].best, dream[3].best) == (True, False)  # mean ± s.e. column: 0.015 vs 0.03


def test_paired_ties_count_on_neither_side():
    """Differences (0, +3, -3) in PSNR: better on 1, worse on 1, the tie on neither; p = 1."""
    suite = in_memory_suite({"hifa": {"a": {"psnr": 20.0}, "b": {"psnr": 22.0}, "c": {"psnr": 18.0}},
                             "dreamfusion": {"a": {"psnr": 20.0}, "b": {"psnr": 25.0}, "c": {"psnr": 15.0}}}, ["hifa", "dreamfusion"])
    result = paired(suite, "dreamfusion", "hifa", "psnr")
    assert (result.n, result.mean, result.better, result.worse) == (3, 0.0, 1, 1)
    assert result.se == pytest.approx(3.0 / 3**0.5)  # sample sd of (0, 3, -3) is 3, over sqrt(3)
    assert result.p_sign == sign_test(1, 1) == 1.0


def test_per_view_lists_skip_missing_views():
    """A per-view list with nulls: mean and s.e. over the views that have a number, n their count."""
    value = to_value([1.0, None, 3.0, "x"])
    assert (value.mean, value.n) == (2.0, 2) and value.se == pytest.approx(1.0)
    assert to_value({"per_view": [4.0, None]}) == Value(4.0, None, 1)


def test_an_explicit_n_wins_over_the_per_view_list_length():
    """{"mean", "se", "n"} keeps its n; without n it is the per-view list's length."""
    assert to_value({"mean": 0.5, "se": 0.1, "n": 7}) == Value(0.5, 0.1, 7)
    assert to_value({"mean": 0.5, "n": 3, "per_view": [0.4, 0.5, 0.6, 0.5]}).n == 3
    assert to_value({"mean": 0.5, "per_view": [0.4, 0.5, 0.6, 0.5]}).n == 4
    assert to_value({"mean": 0.5, "per_view": [0.4, None, 0.6, 0.5]}).n == 3  # a null view was not scored
    assert to_value({"mean": 0.5, "n": True, "per_view": [0.4, 0.6]}).n == 2  # a bool is not a count


def test_recent_pace_spans_exactly_the_last_window_rows():
    """The pace is over the last 10 rows (9 intervals): a slow interval just before them is left out."""
    rows = [{"step": 10.0, "time_s": 10.0}] + [{"step": float(s), "time_s": 30.0 + (s - 20) * 0.5} for s in range(20, 120, 10)]
    assert len(rows) == 11
    assert recent_pace(rows) == pytest.approx(0.5)
    assert recent_pace(rows, window=11) == pytest.approx((75.0 - 10.0) / 100.0)


def test_recent_pace_falls_back_to_the_run_mean_when_time_runs_backwards():
    """time_s lower at the last row than at the window's first (a reset clock): the whole-run mean time per step."""
    rows = [{"step": float(s), "time_s": s * 2.0} for s in range(10, 110, 10)] + [{"step": 110.0, "time_s": 30.0}]
    assert recent_pace(rows) == pytest.approx(30.0 / 110.0)


def test_eta_is_never_negative():
    """A log older than the time it predicted: the time to go is 0, not negative."""
    assert Training("running", 390, 400, 1.0, 60.0).eta_s == 0.0
    assert Training("running", 300, 400, 1.0, 30.0).eta_s == pytest.approx(70.0)
    assert Training("stopped", 300, 400, 1.0, 30.0).eta_s is None


def test_totals_quote_the_longest_eta():
    """Two running trainings with 60 s and 50 min to go: the totals line says the longest, 50 min."""
    suite = in_memory_suite({}, ["hifa"])
    trainings = {
        ("hifa", "a", 0): Training("running", 340, 400, 1.0, 0.0),  # 60 s
        ("hifa", "b", 0): Training("running", 100, 400, 10.0, 0.0),  # 3000 s
        ("hifa", "c", 0): Training("done", 400, 400, 1.0, 5.0),
    }
    totals = Status(suite, trainings).totals()
    assert totals.startswith("trainings: 1 done, 2 running (longest ETA 50 min); evaluations: 3/3")
