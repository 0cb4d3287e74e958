"""`hifa status SUITE`: each run's training step, pace and time to go, and the later steps' state,
from the run folders of a suite that is still running."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from hifa.cli import main
from hifa.status import duration, render_status, suite_status
from tests.report_fixture import make_seeded_suite, make_suite


def in_training(run: Path, iterations: int = 400) -> None:
    """Turn a fixture run into one mid-training: its log reaches step 200 (0.4 s per step), no summary or later steps."""
    (run / "config.yaml").write_text(f"preset: hifa\nprompt: a snowman\niterations: {iterations}\n")
    (run / "train_summary.json").unlink()
    for step in ("render", "depth", "mesh", "eval"):
        for path in sorted((run / step).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (run / step).rmdir()


def age(run: Path, seconds: float) -> None:
    """Make a run's training traces (config, log, checkpoint, validation folder) `seconds` old."""
    when = time.time() - seconds
    for name in ("config.yaml", "train_log.csv", "checkpoint.pt", "validation"):
        if (run / name).exists():
            os.utime(run / name, (when, when))


@pytest.fixture
def suite(tmp_path) -> Path:
    """hifa/snowman training (step 200 of 400), dreamfusion/snowman failed at mesh, the rest complete."""
    root = make_suite(tmp_path / "live", missing=())
    in_training(root / "runs" / "hifa" / "snowman")
    return root


def test_a_running_training_shows_its_step_pace_and_time_to_go(suite):
    status = suite_status(suite)
    t = status.trainings[("hifa", "snowman", 0)]
    assert (t.state, t.step, t.iterations) == ("running", 200, 400)
    assert t.seconds_per_step == pytest.approx(0.4) and t.eta_s == pytest.approx(200 * 0.4, abs=2)
    text = render_status(status)
    assert "200/400 (50 %), ETA 80 s" in text
    assert "trainings: 3 done, 1 running (longest ETA 80 s); evaluations: 2/4" in text
    failed = next(line for line in text.splitlines() if line.startswith("DreamFusion") and "a snowman" in line)
    assert failed.split("✓ 200")[1].split() == ["✓", "✓", "✗", "·", "mesh:", "RuntimeError:", "CUDA", "out", "of", "memory"]  # train, render, depth done; mesh failed; no eval


def test_a_training_whose_log_went_quiet_is_stopped_not_running(suite):
    age(suite / "runs" / "hifa" / "snowman", 2 * 3600)
    t = suite_status(suite).trainings[("hifa", "snowman", 0)]
    assert t.state == "stopped" and t.eta_s is None
    assert "stopped at 200/400 (50 %), 2.0 h ago" in render_status(suite_status(suite))


def test_the_time_to_go_counts_from_the_last_log_write(suite):
    """The log is written at checkpoints: a minute after one, the training is a minute further on."""
    age(suite / "runs" / "hifa" / "snowman", 60)
    t = suite_status(suite).trainings[("hifa", "snowman", 0)]
    assert t.state == "running" and t.eta_s == pytest.approx(80 - 60, abs=2)


def test_a_training_that_just_started_is_running(tmp_path):
    """Only config.yaml so far (no checkpoint, no log until the first checkpoint): running, at step 0."""
    root = make_suite(tmp_path / "new", methods=("hifa",), failed=(), missing=())
    run = root / "runs" / "hifa" / "snowman"
    shutil.rmtree(run)
    run.mkdir()
    (run / "config.yaml").write_text("preset: hifa\nprompt: a snowman\niterations: 400\n")
    t = suite_status(root).trainings[("hifa", "snowman", 0)]
    assert (t.state, t.step, t.eta_s) == ("running", None, None)
    line = next(x for x in render_status(suite_status(root)).splitlines() if "a snowman" in x)
    assert line.split() == ["HiFA", "a", "snowman", "0/400", "·", "·", "·", "·"]


def test_a_run_not_started_is_waiting(tmp_path):
    root = make_seeded_suite(tmp_path / "s", {0: 0.0, 1: 2.0}, methods=("hifa",))
    shutil.rmtree(root / "runs" / "hifa" / "snowman.seed1")
    status = suite_status(root)
    assert status.trainings[("hifa", "snowman", 1)].state == "waiting"
    text = render_status(status)
    assert "hifa" not in text.splitlines()[0] and "× 2 seeds (4 runs)" in text.splitlines()[0]
    assert "trainings: 3 done, 1 waiting; evaluations: 3/4" in text


def test_an_unreadable_training_summary_is_damaged_not_running(suite):
    """A train_summary.json that does not parse means the training ended and its record was lost, however fresh the log."""
    run = suite / "runs" / "hifa" / "snowman"
    (run / "train_summary.json").write_text('{"steps": 4')
    status = suite_status(suite)
    t = status.trainings[("hifa", "snowman", 0)]
    assert (t.state, t.eta_s) == ("damaged", None)
    text = render_status(status)
    assert "✗ train_summary.json unreadable (log at 200)" in text
    assert "trainings: 3 done, 1 damaged; evaluations: 2/4" in text


def test_cli_prints_the_table_or_json(suite, capsys):
    assert main(["status", str(suite)]) == 0
    assert "ETA 80 s" in capsys.readouterr().out
    assert main(["status", str(suite), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    runs = {(r["method"], r["prompt_slug"]): r for r in document["runs"]}
    assert document["schema"] == "hifa.suite-status/1" and len(runs) == 4
    assert runs[("hifa", "snowman")]["training"] == "running" and runs[("hifa", "snowman")]["eta_s"] == pytest.approx(80, abs=2)
    assert runs[("dreamfusion", "snowman")]["steps"]["mesh"] == "failed"


def test_durations():
    assert [duration(s) for s in (5, 89, 300, 5399, 7200)] == ["5 s", "89 s", "5 min", "90 min", "2.0 h"]


def test_status_does_not_load_torch(suite):
    """It must answer fast on a login node or in a watch loop: torch's import alone takes about 1.5 s."""
    import subprocess
    import sys

    code = f"import sys; from hifa.cli import main; assert main(['status', {str(suite)!r}]) == 0; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_the_pace_is_the_recent_one():
    """A run resumed on a GPU twice as fast: the time to go follows the last rows, not the whole run's mean."""
    from hifa.status import recent_pace

    slow = [{"step": float(s), "time_s": s * 1.0} for s in range(10, 110, 10)]
    fast = [{"step": float(s), "time_s": 100 + (s - 100) * 0.5} for s in range(110, 310, 10)]
    assert recent_pace(slow + fast) == pytest.approx(0.5)
    assert recent_pace(slow) == pytest.approx(1.0) and recent_pace(slow[:1]) == pytest.approx(1.0) and recent_pace([]) is None


def read_until(stream, needle: bytes, times: int, timeout_s: float = 120.0) -> bytes:
    """What a pipe has written by the time `needle` appeared `times` times (or the timeout passed)."""
    import os
    import select

    seen, end = b"", time.monotonic() + timeout_s
    while seen.count(needle) < times and time.monotonic() < end:
        if select.select([stream], [], [], 0.5)[0]:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen


def test_watch_repeats_rides_out_a_missing_suite_and_ends_quietly_on_ctrl_c(suite, tmp_path):
    import signal
    import subprocess
    import sys

    later = tmp_path / "later"  # no suite folder yet: the watch says so and keeps watching
    # A shell without job control starts background commands with SIGINT ignored (`make test &`), and Python then
    # installs no KeyboardInterrupt handler: give the watch the default disposition a terminal would.
    procs = [subprocess.Popen([sys.executable, "-m", "hifa.cli", "status", str(folder), "--watch", "1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
             for folder in (suite, later)]
    # Wait for two reports each rather than a fixed time: on a loaded machine the start-up alone can take seconds.
    report, missing = b"trainings: 3 done, 1 running", f"hifa: suite folder not found: {later}".encode()
    early = [read_until(procs[0].stdout, report, 2), read_until(procs[1].stderr, missing, 2)]
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    (out, err), (out_later, err_later) = (proc.communicate(timeout=30) for proc in procs)
    out, err_later = (early[0] + out).decode(), (early[1] + err_later).decode()
    err, out_later = err.decode(), out_later.decode()
    assert [proc.returncode for proc in procs] == [0, 0], (err, err_later)
    assert out.count("trainings: 3 done, 1 running") >= 2 and "interrupted" not in err
    assert err_later.count(f"hifa: suite folder not found: {later}") >= 2 and out_later.strip() == ""


def test_the_devices_the_runs_trained_on_are_counted(suite):
    sessions = {"hifa/a-red-ball-on-blue-box": ["AMD EPYC", "NVIDIA H100 80GB HBM3"], "hifa/snowman": ["NVIDIA H100 80GB HBM3"],
                "dreamfusion/a-red-ball-on-blue-box": ["NVIDIA A100-SXM4-80GB"]}  # dreamfusion/snowman: no record
    for name, devices in sessions.items():
        recorded = [{"from_step": 100 * i, "device": {"name": d}} for i, d in enumerate(devices)]
        (suite / "runs" / name / "environment.json").write_text(json.dumps({"sessions": recorded}))
    status = suite_status(suite)
    # The latest session's device counts: a run resumed on the H100 is an H100 run.
    assert render_status(status).endswith("; on NVIDIA H100 80GB HBM3 (2), NVIDIA A100-SXM4-80GB (1)")
    runs = {(r["method"], r["prompt_slug"]): r for r in status.as_dict()["runs"]}
    assert runs[("hifa", "a-red-ball-on-blue-box")]["device"] == "NVIDIA H100 80GB HBM3"
    assert runs[("dreamfusion", "snowman")]["device"] is None


@pytest.mark.parametrize("change, message", [
    ({"methods": 5}, "'methods' must be a non-empty list of distinct method names, got 5"),
    ({"methods": "hifa"}, "'methods' must be a non-empty list of distinct method names, got \"hifa\""),
    ({"seeds": 3}, "'seeds' must be a non-empty list of distinct non-negative integers, got 3"),
    ({"prompts": {"x": 5}},
     "'prompts' must be a non-empty mapping of prompt slugs (folder names without a dot) to prompts, got {\"x\": 5}"),
])
def test_a_damaged_suite_json_is_one_line_naming_the_key(suite, capsys, change, message):
    """The check `hifa report` makes (hifa.report.collect), for table and JSON alike."""
    meta = json.loads((suite / "suite.json").read_text())
    (suite / "suite.json").write_text(json.dumps({**meta, **change}))
    for extra in ([], ["--json"]):
        assert main(["status", str(suite), *extra]) == 2
        assert capsys.readouterr() == ("", f"hifa: error: {suite / 'suite.json'}: {message}\n")
