"""Table contents shared by the page, the Markdown and the LaTeX: formatted cells, one
number of decimals per column, and the best value of each column marked."""

from __future__ import annotations

from dataclasses import dataclass

from hifa.report.catalog import Metric, column_decimals, metric_for
from hifa.report.collect import Aggregate, Suite


@dataclass(frozen=True)
class Cell:
    mean: float | None
    se: float | None
    n: int | None
    text: str  # the mean, formatted ("—" when there is none)
    se_text: str | None  # the standard error, formatted, or None
    best: bool = False
    note: str | None = None  # "failed", "missing" for per-prompt cells without a value

    @property
    def plain(self) -> str:
        """'12.34 ± 0.56' (or '12.34', 'failed', '—')."""
        if self.mean is None:
            return self.note or self.text
        return f"{self.text} ± {self.se_text}" if self.se_text else self.text


@dataclass(frozen=True)
class Table:
    metrics: list[Metric]  # columns (summary) or one metric (per prompt)
    columns: list[str]  # column headers (plain text)
    rows: list[tuple[str, list[Cell]]]  # method -> cells


def _mark_best(cells: list[Cell], metric: Metric) -> list[Cell]:
    """Bold the best displayed value(s) of a column (ties all bold), when a direction is known
    and at least two rows have a value."""
    valued = [c for c in cells if c.mean is not None]
    if metric.higher_is_better is None or len(valued) < 2:
        return cells
    target = (max if metric.higher_is_better else min)(_shown(c) for c in valued)
    return [Cell(c.mean, c.se, c.n, c.text, c.se_text, c.mean is not None and _shown(c) == target, c.note) for c in cells]


def _shown(cell: Cell) -> float:
    """The value as displayed (rounded), so that equal-looking values tie."""
    try:
        return float(cell.text)
    except ValueError:
        return float(cell.mean)


def _cell(metric: Metric, decimals: int, mean: float | None, se: float | None, n: int | None, note: str | None = None) -> Cell:
    return Cell(mean, se, n, metric.fmt(mean, decimals), metric.fmt(se, decimals) if se is not None else None, False, note)


def summary_table(suite: Suite, methods: list[str], keys: list[str]) -> Table:
    """Methods x metrics: mean ± s.e. across prompts."""
    metrics = [metric_for(k) for k in keys]
    aggs: dict[tuple[str, str], Aggregate | None] = {(m, k): suite.aggregate(m, k) for m in methods for k in keys}
    columns: list[list[Cell]] = []
    for metric in metrics:
        col_aggs = [aggs[(m, metric.key)] for m in methods]
        decimals = column_decimals(metric, [a.mean for a in col_aggs if a])
        cells = [_cell(metric, decimals, a.mean if a else None, a.se if a else None, a.n if a else None) for a in col_aggs]
        columns.append(_mark_best(cells, metric))
    rows = [(m, [col[i] for col in columns]) for i, m in enumerate(methods)]
    return Table(metrics, [f"{x.label} {x.arrow}".strip() for x in metrics], rows)


def prompt_table(suite: Suite, key: str, methods: list[str]) -> Table:
    """Methods x prompts for one metric, then the mean ± s.e. across prompts; a run without
    a value says why ('failed', 'missing')."""
    metric = metric_for(key)
    decimals = column_decimals(metric, [v.mean for m in methods for s in suite.slugs if (v := suite.run(m, s).metrics.get(key))])
    columns: list[list[Cell]] = []
    for slug in suite.slugs:
        cells = []
        for m in methods:
            run = suite.run(m, slug)
            value = None if run.failed else run.metrics.get(key)
            note = "failed" if run.failed else (None if value else "stale" if run.stale else "missing")
            cells.append(_cell(metric, decimals, value.mean if value else None, value.se if value else None, value.n if value else None, note))
        columns.append(_mark_best(cells, metric))
    aggs = [suite.aggregate(m, key) for m in methods]
    columns.append(_mark_best([_cell(metric, decimals, a.mean if a else None, a.se if a else None, a.n if a else None) for a in aggs], metric))
    rows = [(m, [col[i] for col in columns]) for i, m in enumerate(methods)]
    return Table([metric], [suite.prompts[s] for s in suite.slugs] + ["mean ± s.e."], rows)


def table_keys(suite: Suite, methods: list[str]) -> list[str]:
    """Metrics that at least one of `methods` has."""
    return [k for k in suite.metric_keys if any(suite.aggregate(m, k) for m in methods)]


def headline(keys: list[str]) -> list[str]:
    """The headline metrics among `keys` (all of them when none is a headline metric)."""
    return [k for k in keys if metric_for(k).headline] or list(keys)
