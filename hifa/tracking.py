"""MLflow experiment tracking: one run per training, safe for parallel jobs on one SQLite file.

Concurrency: SQLite has one writer at a time and its busy timeout does not cover every case: on a fresh
file MLflow runs schema migrations and inserts the default experiment, which racing processes both attempt
("table ... already exists"), and a transaction that reads before it writes fails at once with "database
is locked" while another writer is pending. So each process takes an exclusive `fcntl.flock` on `<db>.lock`
next to the database around store initialisation, experiment and run creation and every write (one short
transaction per hold; flock also serialises threads). Reads take no lock (MLflow sets a 20 s busy timeout).
Every call is also retried with jittered backoff on "locked"/"busy" errors, for writers outside this module
such as `mlflow ui`. The rollback journal is kept (no WAL) so that shared file systems work too.
Tracking failures never stop training: a tracker warns once and carries on. A training's tracker writes its
metrics from a background thread (`write_in_background`), so a step never waits for the lock either.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.entities import Metric, Param, Run  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from hifa.io import write_json_atomic  # noqa: E402
from hifa.mlflow_uri import default_tracking_uri, foreign_store, unreachable_server  # noqa: E402,F401 - default_tracking_uri is part of this module's API
from hifa.tracking_queue import BackgroundWriter  # noqa: E402

try:
    import fcntl
except ImportError:  # pragma: no cover - no inter-process lock off POSIX
    fcntl = None

log = logging.getLogger(__name__)
# MLflow announces the creation of a fresh store's tables at INFO on stderr; a CLI error stays one line.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
T = TypeVar("T")

RUN_FILE = "run.json"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value, in characters
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value (a longer prompt would make the run fail to start)
MAX_BATCH_PARAMS, MAX_BATCH_METRICS = 100, 1000  # MLflow's limits per log_batch call
RETRIES = 8
LOCK_TIMEOUT = 120.0  # seconds a tracking call waits for the store's lock before giving up (training goes on)
FLUSH_TIMEOUT = LOCK_TIMEOUT + 30.0  # seconds the end of a training waits for its queued metrics
STOP_FLUSH_TIMEOUT = 10.0  # the same for a failed or killed training (SLURM sends SIGKILL 30 s after SIGTERM by default)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, or None for other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()


@contextlib.contextmanager
def store_lock(tracking_uri: str, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive inter-process lock on `<db>.lock` (no-op for non-SQLite stores).

    A holder that hangs (a suspended job on a shared file system) must not stall every training: after
    `timeout` seconds (default LOCK_TIMEOUT) this raises TimeoutError, which a Tracker counts as one failed
    call and moves on.
    """
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    db = sqlite_path(tracking_uri)
    if db is None or fcntl is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    lock = db.with_name(db.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{lock} has been held by another process for {timeout:.0f} s") from None
                time.sleep(0.01 + 0.04 * random.random())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_lock_error(exc: BaseException) -> bool:
    """Whether an exception is SQLite reporting a locked or busy database."""
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text or "table is locked" in text


def with_retry(fn: Callable[[], T], attempts: int = RETRIES) -> T:
    """Call fn, retrying with jittered exponential backoff while the database is locked."""
    for attempt in range(attempts - 1):
        try:
            return fn()
        except Exception as exc:
            if not is_lock_error(exc):
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    return fn()


def locked_call(tracking_uri: str, fn: Callable[[], T], lock_timeout: float | None = None, attempts: int = RETRIES) -> T:
    """Call fn under the store lock (waiting at most lock_timeout s for it, default LOCK_TIMEOUT), with retries."""

    def attempt() -> T:
        with store_lock(tracking_uri, lock_timeout):
            return fn()

    return with_retry(attempt, attempts)


def make_client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient; the first one in a process creates or migrates the store, under the lock."""
    return locked_call(tracking_uri, lambda: MlflowClient(tracking_uri))


def clip_text(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with '...' when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts to dotted keys; values to strings cut to MLflow's length limit."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{prefix}{key}."))
            continue
        text = json.dumps(value, default=str) if isinstance(value, (list, tuple)) else str(value)
        flat[f"{prefix}{key}"] = clip_text(text, MAX_PARAM_LENGTH)
    return flat


def get_or_create_experiment(client: MlflowClient, tracking_uri: str, name: str) -> str:
    """Id of the named experiment, created (or restored) under the store lock, so racing jobs share one.

    A new experiment keeps its artifacts in `<db folder>/mlartifacts/<name>` (a server store decides itself).
    """
    db = sqlite_path(tracking_uri)
    location = None if db is None else (db.parent / "mlartifacts" / re.sub(r"[^A-Za-z0-9._-]+", "_", name)).as_uri()

    def find_or_create() -> str:
        found = client.get_experiment_by_name(name)
        if found is None:
            return client.create_experiment(name, artifact_location=location)
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id

    return locked_call(tracking_uri, find_or_create)


def find_run(client: MlflowClient, run_id: str) -> Run | None:
    """The run, or None when the store does not have it (e.g. the database was recreated)."""
    try:
        return with_retry(lambda: client.get_run(run_id))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def read_run_file(run_dir: Path) -> dict[str, str]:
    """The contents of run_dir/run.json, or {} when it is missing or unreadable."""
    try:
        record = json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


class Tracker:
    """One MLflow run; methods never raise, they count failures and warn about the first."""

    def __init__(self, client: MlflowClient, tracking_uri: str, experiment_id: str, run_id: str):
        self.client, self.tracking_uri, self.experiment_id, self.run_id = client, tracking_uri, experiment_id, run_id
        self.failures = 0
        self._queue: BackgroundWriter[Metric] | None = None

    @classmethod
    def start(
        cls,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, Any] | None,
        run_dir: Path,
    ) -> Tracker:
        """Create the run (or reopen the one in run_dir/run.json), write run.json, log params; NullTracker on failure."""
        if (why := unreachable_server(tracking_uri)) is not None:
            log.warning("MLflow tracking disabled: the tracking server %s cannot be reached (%s)", tracking_uri, why)
            return NullTracker()
        try:
            client = make_client(tracking_uri)
            record = read_run_file(run_dir)
            same_store = record.get("run_id") and record.get("tracking_uri") == tracking_uri
            run = find_run(client, record["run_id"]) if same_store else None
            if run is None:
                experiment_id = get_or_create_experiment(client, tracking_uri, experiment)
                tag_values = {str(k): clip_text(str(v), MAX_TAG_LENGTH) for k, v in (tags or {}).items()}
                run = locked_call(tracking_uri, lambda: client.create_run(experiment_id, tags=tag_values, run_name=run_name))
            else:  # resumed training
                locked_call(tracking_uri, lambda: client.update_run(run.info.run_id, status="RUNNING"))
            info = run.info
            record = {"tracking_uri": tracking_uri, "experiment_id": info.experiment_id, "run_id": info.run_id}
            # artifact_uri lets later steps copy files into a local store without importing mlflow (~3 s a step).
            write_json_atomic(Path(run_dir) / RUN_FILE, {**record, "run_name": info.run_name, "artifact_uri": info.artifact_uri})
        except Exception as exc:
            log.warning("MLflow tracking disabled: could not start a run in %s (%s)", tracking_uri, exc)
            return NullTracker()
        tracker = cls(client, tracking_uri, info.experiment_id, info.run_id)
        tracker.log_params(params)
        return tracker

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> Tracker:
        """Reopen the run recorded in run_dir/run.json (for later pipeline steps); NullTracker if none."""
        record = read_run_file(run_dir)
        if not record.get("run_id") or not record.get("tracking_uri"):
            return NullTracker()
        if (current := foreign_store(record["tracking_uri"])) is not None:
            log.warning("MLflow tracking skipped: %s was tracked in %s, this job writes to %s", run_dir, record["tracking_uri"], current)
            return NullTracker()
        if (why := unreachable_server(record["tracking_uri"])) is not None:
            log.warning("MLflow tracking skipped: the tracking server %s cannot be reached (%s)", record["tracking_uri"], why)
            return NullTracker()
        try:
            client = make_client(record["tracking_uri"])
            run = with_retry(lambda: client.get_run(record["run_id"]))
        except Exception as exc:
            log.warning("MLflow tracking disabled: could not reopen run %s (%s)", record["run_id"], exc)
            return NullTracker()
        return cls(client, record["tracking_uri"], run.info.experiment_id, run.info.run_id)

    def _guard(self, what: str, fn: Callable[[], object]) -> None:
        """Run a tracking call; on failure count it and warn the first time."""
        try:
            fn()
        except Exception as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("MLflow %s failed for run %s (%s); training goes on, later failures silent", what, self.run_id, exc)

    def _write(self, what: str, fn: Callable[[], object], lock_timeout: float | None = None, attempts: int = RETRIES) -> None:
        """Guarded fn under the store lock, with retries."""
        self._guard(what, lambda: locked_call(self.tracking_uri, fn, lock_timeout, attempts))

    def write_in_background(self) -> Tracker:
        """From now on queue metrics and write them from a background thread, so a training step never waits
        for the store's lock; `flush` or `set_terminated` waits for them."""
        if self._queue is None:
            self._queue = BackgroundWriter(self._write_metrics, MAX_BATCH_METRICS)
        return self

    def _write_metrics(self, batch: list[Metric]) -> None:
        self._write("log_metrics", lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at a training step (queued when writing in the background)."""
        stamp = int(time.time() * 1000)
        batch = [Metric(str(k), float(v), stamp, int(step)) for k, v in metrics.items()]
        if self._queue is not None:
            self._queue.put(batch)
            return
        for start in range(0, len(batch), MAX_BATCH_METRICS):
            self._write_metrics(batch[start : start + MAX_BATCH_METRICS])

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait up to `timeout` seconds for queued metrics to be written; False (with a warning) if some were not."""
        if self._queue is None or self._queue.flush(timeout):
            return True
        log.warning("MLflow: metrics of run %s still unwritten after %.0f s; left out (train_log.csv has them)", self.run_id, timeout)
        return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) parameters as dotted keys; keys the run has already keep their value (params are immutable)."""
        self._guard("log_params", lambda: self._log_new_params(flatten_params(params)))

    def _log_new_params(self, flat: dict[str, str]) -> None:
        """Log the params the run does not have yet; warn about changed ones."""
        existing = with_retry(lambda: self.client.get_run(self.run_id)).data.params
        changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != v)
        if changed:
            log.warning("MLflow params cannot change within run %s; kept the old values of %s", self.run_id, ", ".join(changed))
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for start in range(0, len(new), MAX_BATCH_PARAMS):
            chunk = new[start : start + MAX_BATCH_PARAMS]
            locked_call(self.tracking_uri, lambda: self.client.log_batch(self.run_id, params=chunk))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a folder's contents) into the run's artifacts."""
        method = "log_artifacts" if Path(path).is_dir() else "log_artifact"
        upload = lambda: getattr(self.client, method)(self.run_id, str(path), artifact_path)  # noqa: E731
        self._guard("log_artifact", lambda: with_retry(upload))

    def set_terminated(self, status: str = "FINISHED") -> None:
        """Write queued metrics, then mark the run FINISHED, FAILED or KILLED; later metrics are written directly.

        A failed or killed training spends at most STOP_FLUSH_TIMEOUT seconds on both, queue and mark: a pre-empted
        job has seconds before SIGKILL."""
        finished = status == "FINISHED"
        deadline = time.monotonic() + (FLUSH_TIMEOUT if finished else STOP_FLUSH_TIMEOUT)
        if self._queue is not None:
            self.flush(max(deadline - time.monotonic(), 0.0))
            self._queue.close(0)
            self._queue = None
        mark = lambda: self.client.set_terminated(self.run_id, status)  # noqa: E731
        if finished:
            self._write("set_terminated", mark)
        else:
            self._write("set_terminated", mark, lock_timeout=max(deadline - time.monotonic(), 1.0), attempts=1)

    def __enter__(self) -> Tracker:
        """The tracker itself."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Mark the run FINISHED, or KILLED/FAILED when leaving on an exception."""
        self.set_terminated("FINISHED" if exc_type is None else "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")


class NullTracker(Tracker):
    """A Tracker that records nothing (for --no-mlflow, or when the store cannot be reached)."""

    def __init__(self) -> None:
        super().__init__(None, "", "", None)  # type: ignore[arg-type]

    def write_in_background(self) -> Tracker:
        """Nothing to write: no thread."""
        return self

    def _guard(self, what: str, fn: Callable[[], object]) -> None:
        """Record nothing."""
