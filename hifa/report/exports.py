"""Machine-readable outputs: SUITE/metrics.json (per-method aggregates, numbers only, for
`dvc metrics`), report/runs.json (every run's status and values) and report/curves.csv (every
run's training log in long form, for `dvc plots`)."""

from __future__ import annotations

import csv
import io

from hifa.report.catalog import CURVE_ORDER
from hifa.report.collect import Suite

SCHEMA = "hifa.suite-metrics/1"


def suite_metrics(suite: Suite) -> dict:
    """{"schema", "suite", "world"?, "runs": counts (and seeds per prompt), "methods": {method: {metric: {mean, se?, n, seed_sd?},
    runs_complete, runs_failed}}}: numbers only below "runs" and "methods", so `dvc metrics show/diff` lists
    them all. mean/se/n are across prompts (each prompt's value the mean over its seeds); seed_sd is the
    spread between seeds (Suite.seed_sd), present with several seeds."""
    methods = {}
    for m in suite.methods:
        entry = {}
        for key in suite.metric_keys:
            agg = suite.aggregate(m, key)
            if agg is not None:
                entry[key] = {"mean": agg.mean, "n": agg.n, **({"se": agg.se} if agg.se is not None else {})}
                if (spread := suite.seed_sd(m, key)) is not None:
                    entry[key]["seed_sd"] = spread
        statuses = [run.status for s in suite.slugs for run in suite.seed_runs(m, s)]
        entry["runs_complete"] = statuses.count("complete")
        entry["runs_failed"] = statuses.count("failed")
        methods[m] = entry
    payload = {"schema": SCHEMA, "suite": suite.name, "runs": {**suite.counts(), "seeds": len(suite.seeds)}, "methods": methods}
    if suite.world:
        payload["world"] = suite.world
    return payload


def runs_json(suite: Suite) -> dict:
    """Every run of the suite: status, badge, step states, failure, its metric values and its training's sessions."""
    runs = []
    for m in suite.methods:
        for s in suite.slugs:
            for run in suite.seed_runs(m, s):
                runs.append({
                    "method": m, "prompt_slug": s, "seed": run.seed, "prompt": suite.prompts[s], "status": run.status, "badge": run.badge,
                    "steps": run.steps, "failure": run.failure, "problems": run.problems,
                    "path": run.path.relative_to(suite.root).as_posix() if run.path.is_relative_to(suite.root) else str(run.path),
                    "metrics": {k: {"mean": v.mean, **({"se": v.se} if v.se is not None else {}), **({"n": v.n} if v.n is not None else {})}
                                for k, v in run.metrics.items()},
                    "environment": run.environment,
                })
    return {"schema": "hifa.suite-runs/1", "suite": suite.name, "seeds": list(suite.seeds), "runs": runs, "problems": suite.problems}


def curves_csv(suite: Suite) -> str:
    """step, method, prompt_slug, seed, then every logged column (blank where a run does not log it)."""
    columns: list[str] = []
    for run in suite.runs.values():
        for row in run.curves:
            columns += [k for k in row if k != "step" and k not in columns]
    known = [k for k in CURVE_ORDER if k in columns]
    columns = known + [k for k in columns if k not in known]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "method", "prompt_slug", "seed", *columns])  # the slug, as in per_prompt.csv
    for m in suite.methods:
        for s in suite.slugs:
            for run in suite.seed_runs(m, s):
                for row in run.curves:
                    step = row["step"]
                    writer.writerow([int(step) if step == int(step) else step, m, s, run.seed,
                                     *("" if row.get(k) is None else repr(row[k]) for k in columns)])
    return buffer.getvalue()
