"""Which MLflow store a job writes to (no mlflow import: render and mesh jobs only copy files)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 5.0


def default_tracking_uri(root: Path | None = None) -> str:
    """Absolute `sqlite:///` URI of $HIFA_MLFLOW_DB if set, else of <root or cwd>/results/mlflow.db."""
    configured = os.environ.get("HIFA_MLFLOW_DB")
    if configured and "://" in configured:
        return configured
    path = Path(configured) if configured else Path(root or Path.cwd()) / "results" / "mlflow.db"
    return f"sqlite:///{path.expanduser().resolve()}"


def foreign_store(recorded_uri: str) -> str | None:
    """The job's store when $HIFA_MLFLOW_DB (set by the workflow) names another one than a run's run.json
    records (a cloned, pulled or moved results tree, or a changed `mlflow_db`), else None."""
    if not os.environ.get("HIFA_MLFLOW_DB"):
        return None
    current = default_tracking_uri()
    return None if current == recorded_uri else current


def unreachable_server(tracking_uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why an http(s) tracking server cannot be reached (one TCP connect), else None (also for every other store).

    MLflow's own client retries an unreachable server for minutes per request, and a training's tracking calls
    would add that up (a 4-step run took 250 s): one quick probe decides instead."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return f"{exc.__class__.__name__}: {exc}"
