"""Issue 8.5, concurrency: eight processes start at once against the default MLflow store
(<cwd>/results/mlflow.db, created by the race) and write into one results tree, one shared file included.
Every run is recorded whole, nobody sees `database is locked`, and a reader never sees a torn file.
(Two `snakemake` on one folder: tests/reliability/test_workflow_faults.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from tests.reliability.helpers import env

JOBS, STEPS = 8, 10

CHILD = """
import sys, time
from pathlib import Path
import numpy as np
from hifa.io import save_image, write_json_atomic
from hifa.tracking import Tracker, default_tracking_uri
job, work = int(sys.argv[1]), Path.cwd()
(work / f"ready{job}").touch()
while not (work / "go").exists():
    time.sleep(0.005)
run_dir = work / "results" / "runs" / f"job{job}"
tracker = Tracker.start(default_tracking_uri(), "race", f"job{job}", {"job": job, "model": {"depth": job}}, {"worker": job}, run_dir)
for step in range(%d):
    tracker.log_metrics({"loss": 1.0 / (step + 1), "job": float(job)}, step)
    write_json_atomic(work / "results" / "shared.json", {"job": job, "step": step, "payload": [job] * 2000})
    write_json_atomic(run_dir / "metrics.json", {"job": job, "step": step})
view = save_image(np.full((16, 16, 3), job / 8.0), run_dir / "view.png")
tracker.log_artifact(view, "views")
tracker.set_terminated()
sys.exit(0 if type(tracker) is Tracker and tracker.failures == 0 else 3)
""" % STEPS


def test_eight_processes_share_the_default_store_and_results_tree(tmp_path):
    jobs = [
        subprocess.Popen(["nice", "-n", "5", sys.executable, "-c", CHILD, str(job)], cwd=tmp_path, env=env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for job in range(JOBS)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{job}").exists() for job in range(JOBS)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not (tmp_path / "results").exists()
    (tmp_path / "go").touch()  # all eight now race to create the store, the experiment, their runs and files
    shared, reads = tmp_path / "results" / "shared.json", 0
    while any(job.poll() is None for job in jobs):
        if shared.exists():  # a reader during the race: always a whole file, never a mix of two writers
            record = json.loads(shared.read_text())
            assert record["payload"] == [record["job"]] * 2000
            reads += 1
        time.sleep(0.01)
    outputs = [job.communicate(timeout=60) for job in jobs]
    assert [job.returncode for job in jobs] == [0] * JOBS, [err[-2000:] for _, err in outputs]
    for _, err in outputs:
        assert not any(word in err for word in ("Traceback", "locked", "failed", "disabled")), err[-2000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(f"job{j}" for j in range(JOBS))
    for run in runs:
        job = int(run.data.params["job"])
        assert run.info.status == "FINISHED" and run.data.params["model.depth"] == str(job) and run.data.tags["worker"] == str(job)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(STEPS))
        assert [a.path for a in client.list_artifacts(run.info.run_id, "views")] == ["views/view.png"]
        folder = tmp_path / "results" / "runs" / f"job{job}"
        assert json.loads((folder / "run.json").read_text())["run_id"] == run.info.run_id
        assert json.loads((folder / "metrics.json").read_text()) == {"job": job, "step": STEPS - 1}
    assert json.loads(shared.read_text())["step"] == STEPS - 1
    assert not list((tmp_path / "results").rglob(".*.tmp")), "no temporary file left behind"
    assert reads > 0
    print(f"{JOBS} processes, {JOBS * STEPS * 2} atomic writes, {reads} reads of the shared file during the race")
