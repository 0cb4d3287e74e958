"""`hifa report SUITE`: read the run folders and write, from them alone,
SUITE/report/ (index.html, report.md, curves.csv, runs.json, figures/, assets/), SUITE/paper/ and
SUITE/metrics.json. Each folder is staged and swapped in whole; each file is atomic."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hifa.io import write_json_atomic
from hifa.report.assets import Assets, staged_dir
from hifa.report.collect import Suite, collect
from hifa.report.exports import curves_csv, runs_json, suite_metrics
from hifa.report.figures import curves_figure, metrics_figure, save
from hifa.report.html import render_page
from hifa.report.markdown import render_markdown
from hifa.report.paper import write_paper
from hifa.report.tables import headline


@dataclass
class ReportResult:
    suite: Suite
    index: Path
    markdown: Path
    curves: Path
    metrics: Path
    paper: list[Path] = field(default_factory=list)

    def summary_line(self) -> str:
        c = self.suite.counts()
        methods, prompts = len(self.suite.methods), len(self.suite.slugs)
        seeds = len(self.suite.seeds)
        return (f"report for {self.suite.name}: {methods} method{'s' * (methods != 1)} x {prompts} prompt{'s' * (prompts != 1)}"
                + (f" x {seeds} seeds" if seeds > 1 else "") + ", "
                f"{c['complete']} complete, {c['incomplete']} incomplete, {c['failed']} failed; "
                f"wrote {self.index}, {self.markdown.name}, {self.metrics}, {len(self.paper)} files in {self.index.parent.parent / 'paper'}")


def build_report(suite_dir: str | Path, views: int = 4, paper: bool = True) -> ReportResult:
    """Write the report of a suite folder; raises HifaError when there is nothing to report."""
    suite = collect(suite_dir)
    root = suite.root
    final = root / "report"
    with staged_dir(final) as stage:
        assets = Assets(stage, final)
        figures = {}
        for name, fig in (("metrics", metrics_figure(suite, headline(suite.metric_keys))), ("curves", curves_figure(suite))):
            if fig is not None:
                figures[name] = assets.write(f"figures/{name}.png", save(fig, "png", dpi=110))
        assets.write("curves.csv", curves_csv(suite).encode())
        assets.write("runs.json", (json.dumps(runs_json(suite), indent=2, sort_keys=True) + "\n").encode())
        assets.write("report.md", render_markdown(suite, assets, figures, views).encode())
        assets.write("index.html", render_page(suite, assets, figures, views).encode())
    written = []
    if paper:
        with staged_dir(root / "paper") as stage:
            written = [final.parent / "paper" / p.relative_to(stage) for p in write_paper(suite, stage)]
    metrics = write_json_atomic(root / "metrics.json", suite_metrics(suite))
    return ReportResult(suite, final / "index.html", final / "report.md", final / "curves.csv", metrics, written)
