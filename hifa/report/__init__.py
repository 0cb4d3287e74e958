"""The suite report: comparison page (HTML + Markdown), paper tables and figures, and the
suite-level metrics for DVC, all regenerated from the run folders alone.

Modules: catalog (metric and method vocabulary), run (one run folder -> a record), collect (the suite's
runs, aggregates over seeds and prompts),
tables (formatted cells, best per column), figures (matplotlib), assets (staged folders,
thumbnails), html, markdown, paper, exports (metrics.json, curves.csv), build (all of it).
"""

from hifa.report.build import ReportResult, build_report
from hifa.report.collect import Run, Suite, collect

__all__ = ["ReportResult", "Run", "Suite", "build_report", "collect"]
