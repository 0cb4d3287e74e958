"""Issue 8.1, interruption: `hifa train` killed (SIGKILL) or pre-empted (SIGTERM) at seeded random points,
then `--resume`d, ends exactly where an uninterrupted run ends; no partial output is ever left in place.

Also a static audit: every file hifa writes goes through hifa.io's atomic helpers.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.helpers import ROOT, assert_outputs_complete, assert_same_training, env, load_state, train_argv

SIGKILLS = 3
SIGTERMS = 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, Path]:
    """An uninterrupted tiny run in a subprocess: (its checkpoint, the shared bank cache)."""
    tmp = tmp_path_factory.mktemp("reference")
    cache = tmp / "cache"
    proc = subprocess.run(train_argv(tmp / "run", cache), env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_state(tmp / "run"), cache


def start(run: Path, cache: Path, resume: bool, db: Path | None = None) -> subprocess.Popen:
    argv = train_argv(run, cache, *(["--resume"] if resume else []), db=db)
    # SIGINT as in a terminal (a test runner may have it ignored, and Python then keeps ignoring it).
    restore_int = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    return subprocess.Popen(argv, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore_int)


def wait_for_checkpoint(run: Path, proc: subprocess.Popen) -> None:
    """Until the first checkpoint appears (the loop is running) or the process ended."""
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def wait_until_training(run: Path, proc: subprocess.Popen, since: float) -> None:
    """Until the trainer has started (it rewrites config.yaml right before its first step) or the process ended."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if (run / "config.yaml").stat().st_mtime >= since:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)


def wait_until_logged(run: Path, proc: subprocess.Popen, rows: int) -> None:
    """Until train_log.csv (rewritten with each checkpoint) holds `rows` rows, or the process ended."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if len((run / "train_log.csv").read_text().splitlines()) > rows:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)


def checkpoint_step(run: Path) -> int | None:
    return load_state(run)["step"] if (run / "checkpoint.pt").is_file() else None


def finish(run: Path, cache: Path, db: Path | None = None) -> None:
    proc = start(run, cache, resume=True, db=db)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert not list(run.rglob(".*.tmp")), "a resumed run removes the temporaries of killed writes"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 12


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(reference, tmp_path):
    ref, cache = reference
    rng = random.Random(81)
    run, landed = tmp_path / "run", []
    for kill in range(SIGKILLS):
        since = time.time()
        proc = start(run, cache, resume=kill > 0)
        if kill == 0:  # anywhere from start-up on
            time.sleep(rng.uniform(0.5, 6.0))
        elif kill == 1:  # a random moment of the training steps and checkpoint writes
            wait_until_training(run, proc, since)
            time.sleep(rng.uniform(0.0, 0.8))
        else:  # a random moment after the last step: final views, mesh, summary
            wait_until_logged(run, proc, 12)
            time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:
            landed.append("finished first")
            continue
        before = checkpoint_step(run)
        proc.kill()
        proc.wait()
        # Whatever was on disk at the kill is whole: the checkpoint loads, JSON parses, images decode.
        assert_outputs_complete(run)
        landed.append(f"after checkpoint {checkpoint_step(run) or before}")
    finish(run, cache)
    assert_same_training(ref, load_state(run))
    assert_outputs_complete(run)
    print(f"SIGKILL points: {landed}")


@pytest.mark.slow
def test_sigterm_checkpoints_exits_143_and_resume_equals_an_uninterrupted_run(reference, tmp_path):
    from mlflow.tracking import MlflowClient

    ref, cache = reference
    rng = random.Random(82)
    run, db, stops = tmp_path / "run", tmp_path / "mlflow.db", []
    for term in range(SIGTERMS):
        since = time.time()
        proc = start(run, cache, resume=term > 0, db=db)
        if term == 0:  # inside the training loop: right after the first checkpoint appears
            wait_for_checkpoint(run, proc)
        else:
            wait_until_training(run, proc, since)
            time.sleep(rng.uniform(0.0, 2.0))
        if proc.poll() is not None:
            stops.append("finished first")
            continue
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err[-3000:]
        if proc.returncode in (0, -signal.SIGTERM) and not err.strip() and (run / "train_summary.json").is_file():
            # The run had finished and the interpreter was exiting (main's handler already gone): nothing to stop.
            assert_outputs_complete(run)
            stops.append("finished first (exiting)")
            continue
        assert proc.returncode == 143, (proc.returncode, err[-3000:])
        line = err.strip().splitlines()[-1]
        stopped = re.fullmatch(r"hifa: stopped by SIGTERM at step (\d+) of 12; checkpoint saved in (.+): continue with `hifa train --resume` \(same --out\)", line)
        if stopped:  # inside the loop: the step finished and was checkpointed
            assert checkpoint_step(run) == int(stopped.group(1))
            stops.append(f"step {stopped.group(1)}, checkpointed")
        else:  # the final views or mesh: stopped at once; what was written is whole
            assert line == "hifa: terminated by SIGTERM", err[-3000:]
            stops.append(f"after the loop (checkpoint {checkpoint_step(run)})")
        if term == 0:
            assert stopped, err[-3000:]
        assert_outputs_complete(run)
        run_id = json.loads((run / "run.json").read_text())["run_id"]
        assert MlflowClient(f"sqlite:///{db}").get_run(run_id).info.status == "KILLED"
    finish(run, cache, db=db)
    assert_same_training(ref, load_state(run))
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FINISHED"], "one MLflow run, reopened by each resume, finished at the end"
    print(f"SIGTERM stops: {stops}")


@pytest.mark.slow
def test_ctrl_c_checkpoints_the_step_exits_130_and_resume_equals_an_uninterrupted_run(reference, tmp_path):
    """A first Ctrl-C finishes the step and checkpoints it (like SIGTERM), so no steps since the last checkpoint are lost."""
    ref, cache = reference
    run = tmp_path / "run"
    proc = start(run, cache, resume=False)
    wait_for_checkpoint(run, proc)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "finishing this step and saving a checkpoint (Ctrl-C again to stop at once)" in err
    line = err.strip().splitlines()[-1]
    stopped = re.fullmatch(r"hifa: stopped by SIGINT at step (\d+) of 12; checkpoint saved in (.+): continue with `hifa train --resume` \(same --out\)", line)
    assert stopped, err[-3000:]
    assert checkpoint_step(run) == int(stopped.group(1))
    assert_outputs_complete(run)
    finish(run, cache)
    assert_same_training(ref, load_state(run))


# --- every output is written atomically ------------------------------------------------------------

# Calls that write a file in place. hifa/io.py is where the atomic helpers live; hifa/media.py encodes
# video into a temporary file it renames (ffmpeg and Pillow need a path). A call that fills an in-memory
# buffer (then written by write_bytes_atomic) or exports to bytes (`file_type=`) is fine.
DIRECT_WRITES = re.compile(
    r"open\([^)]*['\"][wax]b?\+?['\"]|\.write_text\(|\.write_bytes\(|torch\.save\(|np\.save\w*\(|\.to_csv\(|imwrite\(|"
    r"imageio\.\w*write|\.savefig\(|\.export\(|write_triangle_mesh|write_point_cloud|json\.dump\(|\.save\("
)
IN_MEMORY = ("buffer", "BytesIO", "file_type=")
ALLOWED = {"hifa/io.py", "hifa/media.py"}


def test_hifa_writes_outputs_only_through_the_atomic_helpers():
    offenders = []
    for path in sorted((ROOT / "hifa").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if DIRECT_WRITES.search(code) and not any(word in code for word in IN_MEMORY):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "write these through hifa.io (write_bytes_atomic, save_image, ...):\n" + "\n".join(offenders)


def test_media_writers_rename_a_temporary_file():
    source = (ROOT / "hifa" / "media.py").read_text()
    assert source.count("_atomic_target(path)") == 2 and source.count("tmp.replace(path)") == 2
