"""MLflow tracking against real SQLite stores: round trip, reopening, failures and parallel writers."""

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from hifa import tracking
from hifa.tracking import NullTracker, Tracker, default_tracking_uri

ROOT = Path(__file__).resolve().parents[1]


def test_default_tracking_uri_is_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("HIFA_MLFLOW_DB", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"
    monkeypatch.setenv("HIFA_MLFLOW_DB", "elsewhere/x.db")
    assert default_tracking_uri(Path("/ignored")) == f"sqlite:///{tmp_path.resolve()}/elsewhere/x.db"


def test_flatten_params_dots_and_truncates():
    flat = tracking.flatten_params({"a": {"b": 1, "c": {"d": [1, 2]}}, "long": "x" * 7000, "none": None})
    assert flat == {"a.b": "1", "a.c.d": "[1, 2]", "long": "x" * 5997 + "...", "none": "None"}


def test_run_round_trip(tmp_path):
    uri = default_tracking_uri(tmp_path)
    params = {"lr": 0.01, "model": {"width": 64, "levels": {"n": 16}}, "prompt": "a hamburger"}
    tracker = Tracker.start(uri, "suite", "hifa-hamburger", params, {"method": "hifa"}, tmp_path / "run")
    assert type(tracker) is Tracker
    for step in (0, 10, 20):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "psnr": float(step)}, step)
    (tmp_path / "view.png").write_bytes(b"png")
    tracker.log_artifact(tmp_path / "view.png", "views")
    tracker.set_terminated("FINISHED")
    assert tracker.failures == 0

    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.run_name == "hifa-hamburger" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.01", "model.width": "64", "model.levels.n": "16", "prompt": "a hamburger"}
    assert run.data.tags["method"] == "hifa"
    assert [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "psnr")] == [(0, 0.0), (10, 10.0), (20, 20.0)]
    assert [a.path for a in client.list_artifacts(tracker.run_id, "views")] == ["views/view.png"]
    experiment = client.get_experiment(tracker.experiment_id)
    assert experiment.artifact_location == (tmp_path / "results" / "mlartifacts" / "suite").as_uri()
    assert (tmp_path / "results" / "mlartifacts" / "suite" / tracker.run_id / "artifacts" / "views" / "view.png").exists()
    assert not (tmp_path / "mlruns").exists() and not Path("mlruns").exists()


def test_run_json_and_reopen(tmp_path):
    uri, run_dir = default_tracking_uri(tmp_path), tmp_path / "run"
    tracker = Tracker.start(uri, "suite", "dreamfusion-cat", {"lr": 0.01}, None, run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    assert record == dict(
        tracking_uri=uri,
        experiment_id=tracker.experiment_id,
        run_id=tracker.run_id,
        run_name="dreamfusion-cat",
        artifact_uri=MlflowClient(uri).get_run(tracker.run_id).info.artifact_uri,
    )
    tracker.set_terminated()

    later = Tracker.from_run_dir(run_dir)
    assert type(later) is Tracker and later.run_id == tracker.run_id
    later.log_metrics({"clip_score": 0.3}, 5000)
    later.log_params({"eval": {"views": 8}})
    resumed = Tracker.start(uri, "suite", "dreamfusion-cat", {"lr": 0.01, "steps": 100}, None, run_dir)
    assert resumed.run_id == tracker.run_id and resumed.failures == 0 and later.failures == 0

    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.metrics == {"clip_score": 0.3}
    assert run.data.params == {"lr": "0.01", "eval.views": "8", "steps": "100"}
    assert run.info.status == "RUNNING"  # resumed training
    assert type(Tracker.from_run_dir(tmp_path / "no-such-run")) is NullTracker


def closed_port() -> int:
    """A local TCP port that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_tracking_server_disables_tracking_at_once(tmp_path, caplog):
    from hifa.mlflow_uri import unreachable_server

    uri = f"http://127.0.0.1:{closed_port()}"
    assert unreachable_server(uri).startswith("ConnectionRefusedError")
    assert unreachable_server(default_tracking_uri(tmp_path)) is None  # not a server: nothing to probe
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level(logging.WARNING, logger="hifa.tracking"):
        tracker = Tracker.start(uri, "suite", "hifa-cat", {"lr": 0.01}, None, run_dir)
    assert type(tracker) is NullTracker and not (run_dir / "run.json").exists()
    assert f"MLflow tracking disabled: the tracking server {uri} cannot be reached (ConnectionRefusedError" in caplog.text
    (run_dir / "run.json").write_text(json.dumps({"tracking_uri": uri, "run_id": "abc"}))
    assert type(Tracker.from_run_dir(run_dir)) is NullTracker
    assert f"MLflow tracking skipped: the tracking server {uri} cannot be reached" in caplog.text


def test_failures_warn_once_and_do_not_raise(tmp_path, caplog):
    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("store unreachable")

    tracker = Tracker(Broken(), default_tracking_uri(tmp_path), "1", "abc")
    with caplog.at_level(logging.WARNING, logger="hifa.tracking"):
        tracker.log_metrics({"loss": 1.0}, 0)
        tracker.log_params({"a": 1})
        tracker.set_terminated("FAILED")
    assert tracker.failures == 3
    assert len([r for r in caplog.records if "store unreachable" in r.getMessage()]) == 1
    with NullTracker() as null:
        null.log_metrics({"loss": 1.0}, 0), null.log_params({"a": 1}), null.log_artifact(tmp_path / "x"), null.set_terminated()
    assert null.failures == 0 and null.run_id is None


def test_retry_on_locked_database(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda seconds: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert tracking.with_retry(flaky) == "ok" and len(calls) == 3


CHILD = """
import sys, time
from pathlib import Path
from hifa.tracking import Tracker
uri, work, job = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
(work / f"ready{job}").touch()
while not (work / "go").exists():
    time.sleep(0.005)
params = {"job": job, "model": {"width": 64, "depth": job}}
tracker = Tracker.start(uri, "race", f"job{job}", params, {"worker": job}, work / f"run{job}")
for step in range(30):
    tracker.log_metrics({"loss": 1.0 / (step + 1), "job": float(job)}, step)
tracker.log_params({"done": True})
tracker.set_terminated()
sys.exit(0 if type(tracker) is Tracker and tracker.failures == 0 else 3)
"""


def test_parallel_processes_share_one_fresh_database(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", CHILD, uri, str(tmp_path)]
    jobs = [subprocess.Popen([*command, str(job)], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for job in range(4)]
    deadline = time.monotonic() + 40
    while not all((tmp_path / f"ready{job}").exists() for job in range(4)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not (tmp_path / "store" / "mlflow.db").exists()
    (tmp_path / "go").touch()  # all four now race to create the database, the experiment and their runs
    errors = [job.communicate(timeout=50)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0, 0], errors
    assert not any(word in text for text in errors for word in ("Traceback", "locked", "failed", "disabled")), errors

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("race")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["job0", "job1", "job2", "job3"]
    for run in runs:
        job = int(run.data.params["job"])
        assert run.info.status == "FINISHED" and run.data.params["model.depth"] == str(job) and run.data.params["done"] == "True"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(30))
        assert {m.value for m in client.get_metric_history(run.info.run_id, "job")} == {float(job)}
        assert json.loads((tmp_path / f"run{job}" / "run.json").read_text())["run_id"] == run.info.run_id
    assert not (tmp_path / "mlruns").exists()


def test_step_artifacts_reach_a_local_store_without_importing_mlflow(tmp_path):
    """Render and mesh jobs copy into a file: store directly; MLflow lists the files all the same."""
    uri, run_dir = default_tracking_uri(tmp_path), tmp_path / "run"
    tracker = Tracker.start(uri, "suite", "hifa-cat", {"lr": 0.01}, None, run_dir)
    assert json.loads((run_dir / "run.json").read_text())["artifact_uri"].startswith("file://")
    (tmp_path / "sheet.png").write_bytes(b"png")
    (tmp_path / "turntable.mp4").write_bytes(b"mp4")
    code = (
        "import sys; from pathlib import Path; from hifa.run_folder import log_artifacts; "
        f"log_artifacts(Path({str(run_dir)!r}), [Path({str(tmp_path / 'sheet.png')!r}), Path({str(tmp_path / 'turntable.mp4')!r})], 'render'); "
        "print('mlflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    listed = {a.path for a in MlflowClient(uri).list_artifacts(tracker.run_id, "render")}
    assert listed == {"render/sheet.png", "render/turntable.mp4"}


def test_step_artifacts_of_an_older_run_json_go_through_mlflow(tmp_path):
    """A run.json written before artifact_uri was recorded still gets its artifacts logged."""
    from hifa.run_folder import log_artifacts

    uri, run_dir = default_tracking_uri(tmp_path), tmp_path / "run"
    tracker = Tracker.start(uri, "suite", "hifa-cat", {"lr": 0.01}, None, run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    del record["artifact_uri"]
    (run_dir / "run.json").write_text(json.dumps(record))
    (tmp_path / "mesh.glb").write_bytes(b"glb")
    log_artifacts(run_dir, [tmp_path / "mesh.glb"], "mesh")
    assert [a.path for a in MlflowClient(uri).list_artifacts(tracker.run_id, "mesh")] == ["mesh/mesh.glb"]


def test_a_run_tracked_in_another_store_is_left_alone(tmp_path, monkeypatch, caplog):
    """A cloned or moved results tree: the job's store ($HIFA_MLFLOW_DB) is not the one run.json names."""
    from hifa.run_folder import log_artifacts

    uri, run_dir = default_tracking_uri(tmp_path / "a"), tmp_path / "run"
    tracker = Tracker.start(uri, "suite", "hifa-cat", {"lr": 0.01}, None, run_dir)
    artifacts = Path(json.loads((run_dir / "run.json").read_text())["artifact_uri"].removeprefix("file://"))
    (tmp_path / "mesh.glb").write_bytes(b"glb")
    monkeypatch.setenv("HIFA_MLFLOW_DB", str(tmp_path / "b" / "mlflow.db"))
    with caplog.at_level(logging.WARNING):
        log_artifacts(run_dir, [tmp_path / "mesh.glb"], "mesh")
        assert type(Tracker.from_run_dir(run_dir)) is NullTracker
    assert not (artifacts / "mesh").exists() and "this job writes to sqlite:///" in caplog.text
    monkeypatch.setenv("HIFA_MLFLOW_DB", str(tmp_path / "a" / "results" / "mlflow.db"))  # the same store: logged
    log_artifacts(run_dir, [tmp_path / "mesh.glb"], "mesh")
    assert (artifacts / "mesh" / "mesh.glb").read_bytes() == b"glb" and not list((artifacts / "mesh").glob(".*"))
    assert type(Tracker.from_run_dir(run_dir)) is Tracker and tracker.run_id


def test_a_lock_held_too_long_gives_up_instead_of_stalling_training(tmp_path, caplog, monkeypatch):
    import fcntl

    uri = default_tracking_uri(tmp_path)
    tracker = Tracker.start(uri, "suite", "hifa-cat", {"lr": 0.01}, None, tmp_path / "run")
    held = os.open(tmp_path / "results" / "mlflow.db.lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # another process's hold (a separate open file description)
    try:
        start = time.monotonic()
        try:
            with tracking.store_lock(uri, timeout=0.3):
                raise AssertionError("the lock was taken while held")
        except TimeoutError as exc:
            assert "has been held by another process for 0 s" in str(exc)
        assert 0.25 < time.monotonic() - start < 5
        monkeypatch.setattr(tracking, "LOCK_TIMEOUT", 0.3)
        with caplog.at_level(logging.WARNING):
            tracker.log_metrics({"loss": 1.0}, 1)  # one failed call, warned once; training goes on
        assert tracker.failures == 1 and "has been held by another process" in caplog.text
    finally:
        os.close(held)
    with tracking.store_lock(uri, timeout=0.3):  # free again
        pass


def hold_lock(uri, held, release):
    """Hold the store's lock from another open file (as another job would) until `release` is set."""
    with tracking.store_lock(uri):
        held.set()
        release.wait(30)


@pytest.fixture
def locked_store(tmp_path):
    """(uri, a tracker writing in the background, release): the store's lock is held by another open file until released."""
    import threading

    uri = default_tracking_uri(tmp_path)
    tracker = Tracker.start(uri, "suite", "bg", {"lr": 0.01}, None, tmp_path / "run").write_in_background()
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_lock, args=(uri, held, release))
    holder.start()
    assert held.wait(10)
    yield uri, tracker, release
    release.set()
    holder.join()


def test_background_metrics_never_wait_for_a_held_lock_and_arrive_in_few_batches(locked_store):
    uri, tracker, release = locked_store
    sizes = []
    real = tracker.client.log_batch
    tracker.client.log_batch = lambda run_id, metrics=(), **kw: (sizes.append(len(metrics)), real(run_id, metrics=metrics, **kw))[1]
    t0 = time.monotonic()
    for step in range(200):
        tracker.log_metrics({"loss": float(step), "psnr": 2.0 * step}, step)
    queued_in = time.monotonic() - t0
    # Written synchronously, the first call would have waited for the holder (30 s); queued, none waits.
    assert queued_in < 5.0 and MlflowClient(uri).get_metric_history(tracker.run_id, "loss") == []
    release.set()
    assert tracker.flush(60)
    assert [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(tracker.run_id, "psnr")] == [(s, 2.0 * s) for s in range(200)]
    # What queued while the lock was held went out together: at most one write before and one after.
    assert sum(sizes) == 400 and len(sizes) <= 3
    tracker.set_terminated("FINISHED")
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "FINISHED" and tracker.failures == 0


def test_set_terminated_writes_queued_metrics_first_and_flush_gives_up_with_a_warning(locked_store, caplog):
    import threading

    uri, tracker, release = locked_store
    tracker.log_metrics({"loss": 0.5}, 7)
    with caplog.at_level(logging.WARNING, logger="hifa.tracking"):
        assert tracker.flush(0.3) is False
    assert "still unwritten after 0 s" in caplog.text and "train_log.csv" in caplog.text
    threading.Timer(0.5, release.set).start()
    tracker.set_terminated("KILLED")  # waits for the queue, then marks the run
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "KILLED" and run.data.metrics == {"loss": 0.5}
    tracker.log_metrics({"late": 1.0}, 8)  # after the end: written directly
    assert MlflowClient(uri).get_run(tracker.run_id).data.metrics["late"] == 1.0


def test_background_writer_keeps_order_batches_and_survives_a_failing_write():
    from hifa.tracking_queue import BackgroundWriter

    import threading

    written, started, gate = [], threading.Event(), threading.Event()

    def write(batch):
        started.set()
        gate.wait(10)
        if batch[0] == "boom":
            raise RuntimeError("store down")
        written.append(list(batch))

    writer = BackgroundWriter(write, batch=4)
    writer.put(["boom"])
    assert started.wait(10)  # the failing batch is being written on its own
    writer.put(list(range(10)))
    gate.set()
    assert writer.close(10)
    assert [x for batch in written for x in batch] == list(range(10)) and all(len(batch) <= 4 for batch in written)
    try:
        writer.put([11])
    except RuntimeError as exc:
        assert "closed" in str(exc)
    else:
        raise AssertionError("put after close must fail")


def test_a_killed_training_spends_one_short_deadline_on_queue_and_mark_together(locked_store, monkeypatch):
    monkeypatch.setattr(tracking, "STOP_FLUSH_TIMEOUT", 1.0)
    uri, tracker, release = locked_store
    tracker.log_metrics({"loss": 0.5}, 7)
    t0 = time.monotonic()
    tracker.set_terminated("KILLED")  # the lock stays held: neither the queue nor the mark can be written
    took = time.monotonic() - t0
    # 1 s for the queue, then at most what is left of it (but 1 s) for the mark: not the 120 s of LOCK_TIMEOUT.
    assert took < 5.0 and tracker.failures >= 1
