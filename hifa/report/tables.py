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
    """Methods x prompts for one metric (a prompt's value: its run's, or the mean over its seeds), then
    the mean ± s.e. across prompts; a prompt without a value says why ('failed', 'stale', 'missing')."""
    metric = metric_for(key)
    values = {(m, s): suite.value(m, s, key) for m in methods for s in suite.slugs}
    decimals = column_decimals(metric, [v.mean for v in values.values() if v])
    columns: list[list[Cell]] = []
    for slug in suite.slugs:
        cells = []
        for m in methods:
            value, runs = values[(m, slug)], suite.seed_runs(m, slug)
            note = None if value else "failed" if any(r.failed for r in runs) else "stale" if any(r.stale for r in runs) else "missing"
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


def seeds_phrase(suite: Suite) -> str:
    """'' for one seed; else ' (each prompt: the mean over its 3 seeds, 0, 1, 2)'."""
    if not suite.multi_seed:
        return ""
    return f" (each prompt: the mean over its {len(suite.seeds)} seeds, {', '.join(map(str, suite.seeds))})"


def summary_note(suite: Suite) -> str:
    """What the summary's numbers are."""
    return f"Mean ± standard error across prompts{seeds_phrase(suite)}; n = prompts with a value; failed runs excluded."


def prompt_note(suite: Suite) -> str:
    """What the per-prompt tables' numbers are."""
    if suite.multi_seed:
        return ("Each prompt's value: the mean ± s.e. over its seeds (n = seeds with a value; failed runs excluded); "
                "last column: mean ± s.e. across prompts (n = prompts).")
    return "Each run's value (± s.e. over views where the metric is a mean over views); last column: mean ± s.e. across prompts."
