"""Many trainings logging to one SQLite MLflow store: how long a training step waits for its metrics.

N processes each start a run and do `--rows` steps of `--step-ms` (a sleep standing in for the GPU) with a
`log_metrics` of `--metrics` values after each, as `hifa train` does every `log_every` steps; then they
end their runs. Measured per `log_metrics` call (the time the step loop is held) and per process (start
to end of run), once with metrics written in the caller (as before) and once from the background writer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
from hifa.tracking import Tracker
uri, job, rows, metrics, step_ms, background = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6] == "1"
t0 = time.perf_counter()
tracker = Tracker.start(uri, "bench", f"job{job}", {"job": job}, None, __import__("pathlib").Path(sys.argv[7]))
if background:
    tracker.write_in_background()
waits = []
for step in range(rows):
    time.sleep(step_ms / 1000)
    t = time.perf_counter()
    tracker.log_metrics({f"m{i}": float(step + i) for i in range(metrics)}, step)
    waits.append(time.perf_counter() - t)
t_end = time.perf_counter()
tracker.set_terminated()
print(json.dumps({"waits": waits, "loop_s": t_end - t0, "total_s": time.perf_counter() - t0, "failures": tracker.failures}))
"""


def run(mode: str, jobs: int, rows: int, metrics: int, step_ms: float) -> dict:
    """All jobs at once against a fresh store; the figures of one mode."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen([sys.executable, "-c", WORKER, uri, str(j), str(rows), str(metrics), str(step_ms), "1" if mode == "background" else "0", f"{tmp}/run{j}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for j in range(jobs)
        ]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise SystemExit(f"worker failed: {err.strip().splitlines()[-1:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        wall = time.perf_counter() - t0
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("bench").experiment_id], max_results=jobs + 10)
        logged = sum(len(client.get_metric_history(r.info.run_id, "m0")) for r in runs)
    waits = sorted(w for r in results for w in r["waits"])
    return {
        "mode": mode,
        "wall_s": wall,
        "log_metrics_ms": {"median": 1000 * statistics.median(waits), "p99": 1000 * waits[int(0.99 * (len(waits) - 1))], "max": 1000 * waits[-1]},
        "step_loop_s_mean": statistics.mean(r["loop_s"] for r in results),
        "process_s_mean": statistics.mean(r["total_s"] for r in results),
        "failures": sum(r["failures"] for r in results),
        "rows_logged": logged,
        "rows_expected": jobs * rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=15)
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    modes = [run(mode, args.jobs, args.rows, args.metrics, args.step_ms) for mode in ("caller", "background")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "commit": commit},
              "settings": vars(args) | {"out": str(args.out)}, "modes": modes}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracking-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    for m in modes:
        w = m["log_metrics_ms"]
        print(f"{m['mode']:>10}: log_metrics median {w['median']:.1f} ms, p99 {w['p99']:.1f} ms, max {w['max']:.0f} ms; "
              f"step loop {m['step_loop_s_mean']:.1f} s, process {m['process_s_mean']:.1f} s, wall {m['wall_s']:.1f} s; "
              f"rows {m['rows_logged']}/{m['rows_expected']}, failures {m['failures']}")


if __name__ == "__main__":
    main()
