"""Paired comparison of each method with a reference method over the same prompts: the mean of the
per-prompt differences ± its standard error, and on how many prompts the method did better, with
an exact two-sided sign test. Pairing removes the prompts' own difficulty from the comparison, so
it separates methods that the unpaired means ± s.e. across prompts cannot."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from hifa.report.catalog import column_decimals, metric_for
from hifa.report.collect import Suite, aggregate

REFERENCE = "hifa"  # the method under study; the others are compared with it


@dataclass(frozen=True)
class Paired:
    """`method` minus `reference` over the `n` prompts where both have a value."""

    mean: float
    se: float | None  # None with one prompt
    n: int
    better: int | None  # prompts where `method` is better (None when the metric has no direction)
    worse: int | None
    p_sign: float | None  # exact two-sided sign test over better/worse (ties dropped)


def sign_test(better: int, worse: int) -> float:
    """Exact two-sided binomial sign test p-value for `better` vs `worse` (ties left out); 1.0 when both are 0."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(better, worse) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(suite: Suite, method: str, reference: str, key: str) -> Paired | None:
    """The paired difference of `method` against `reference` on metric `key`. With several seeds a prompt
    compares the two methods' means over the seeds both have a value for (a seed that failed for one
    method is left out for both)."""
    diffs = {}
    for slug in suite.slugs:
        common = set(suite.seed_values(method, slug, key)) & set(suite.seed_values(reference, slug, key))
        if common:
            diffs[slug] = suite.value(method, slug, key, common).mean - suite.value(reference, slug, key, common).mean
    agg = aggregate(diffs)
    if agg is None:
        return None
    direction = metric_for(key).higher_is_better
    if direction is None:
        return Paired(agg.mean, agg.se, agg.n, None, None, None)
    sign = 1 if direction else -1
    better = sum(1 for d in diffs.values() if sign * d > 0)
    worse = sum(1 for d in diffs.values() if sign * d < 0)
    return Paired(agg.mean, agg.se, agg.n, better, worse, sign_test(better, worse))


def reference_of(suite: Suite, methods: list[str]) -> str | None:
    """'hifa' when it is among two or more methods, else the first of them; None for one method."""
    if len(methods) < 2:
        return None
    return REFERENCE if REFERENCE in methods else methods[0]


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


@dataclass(frozen=True)
class PairedTable:
    """Each method but the reference against it, on the metrics where some method has a pair."""

    reference: str
    keys: list[str]
    rows: list[tuple[str, list[Paired | None]]]  # method -> one result per key

    def formatted(self) -> list[tuple[str, list[tuple[Paired, str, str | None] | None]]]:
        """Per method, per column: (result, signed mean, s.e.) with the column's decimals, or None."""
        out = []
        for method, results in self.rows:
            cells = []
            for i, result in enumerate(results):
                if result is None:
                    cells.append(None)
                    continue
                metric = metric_for(self.keys[i])
                decimals = column_decimals(metric, [r.mean for _, rs in self.rows if (r := rs[i])])
                se = metric.fmt(result.se, decimals) if result.se is not None else None
                cells.append((result, ("+" if result.mean > 0 else "") + metric.fmt(result.mean, decimals), se))
            out.append((method, cells))
        return out


def paired_table(suite: Suite, methods: list[str], keys: list[str]) -> PairedTable | None:
    """The paired results of `methods` against their reference; None without a reference or any pair."""
    reference = reference_of(suite, methods)
    if reference is None:
        return None
    others = [m for m in methods if m != reference]
    results = {(m, k): paired(suite, m, reference, k) for m in others for k in keys}
    keys = [k for k in keys if any(results[(m, k)] for m in others)]
    if not keys:
        return None
    return PairedTable(reference, keys, [(m, [results[(m, k)] for k in keys]) for m in others])


def paired_rows(suite: Suite, methods: list[str], keys: list[str]) -> tuple[str, list[str], list[tuple[str, list[str]]]] | None:
    """(reference, column labels, [(method, cell texts)]) for each method but the reference; cells read
    '+2.41 ± 0.37 · better on 3, worse on 0 (p = 0.25)' (ties on neither side). None without a reference or a pair."""
    table = paired_table(suite, methods, keys)
    if table is None:
        return None
    def text(cell: tuple[Paired, str, str | None] | None) -> str:
        if cell is None:
            return "—"
        result, mean, se = cell
        sign_test_text = f" · better on {result.better}, worse on {result.worse} ({p_text(result.p_sign)})" if result.better is not None else ""
        return mean + (f" ± {se}" if se else "") + sign_test_text

    rows = [(m, [text(cell) for cell in cells]) for m, cells in table.formatted()]
    return table.reference, [f"{metric_for(k).label} {metric_for(k).arrow}".strip() for k in table.keys], rows


def paired_note(reference_label: str, multi_seed: bool = False) -> str:
    """What the paired table's numbers are."""
    values = "its mean over the seeds both methods have" if multi_seed else "as in the tables below"
    return (f"Each method minus {reference_label}, prompt by prompt (the same prompts, each prompt's value {values}): "
            "mean ± s.e. of the differences; 'better on k, worse on j': prompts where the method beats "
            f"{reference_label} in the metric's direction, or loses (ties count on neither side); p: exact two-sided sign test.")


def paired_csv(suite: Suite, keys: list[str]) -> str | None:
    """Every method against the reference on every metric: method, reference, metric, mean_difference,
    se, n, better, worse, p_sign (blank where undefined). None without a reference."""
    reference = reference_of(suite, suite.methods)
    if reference is None:
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "reference", "metric", "mean_difference", "se", "n", "better", "worse", "p_sign"])
    for m in suite.methods:
        for key in keys:
            if m == reference or (result := paired(suite, m, reference, key)) is None:
                continue
            writer.writerow([m, reference, key, repr(result.mean), _cell(result.se), result.n, _cell(result.better), _cell(result.worse),
                             _cell(result.p_sign)])
    return buffer.getvalue()


def _cell(x: float | int | None) -> str:
    return "" if x is None else repr(x)
