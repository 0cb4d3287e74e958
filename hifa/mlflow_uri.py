"""Which MLflow store a job writes to (no mlflow import: render and mesh jobs only copy files)."""

from __future__ import annotations

import os
from pathlib import Path


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
