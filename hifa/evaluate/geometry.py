"""Geometry metrics: Chamfer distance and F-score between surface point sets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class GeometryMetrics:
    """Chamfer distance (mean of both directed mean distances) and F-score at tau."""

    chamfer: float
    precision: float
    recall: float
    fscore: float
    tau: float


def sample_mesh_surface(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Points uniformly distributed over a mesh's area."""
    points, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False), count, seed=seed)
    return np.asarray(points, dtype=np.float64)


def compare_points(prediction: np.ndarray, reference: np.ndarray, tau: float) -> GeometryMetrics:
    """Chamfer = (mean_p d(p, R) + mean_r d(r, P)) / 2; F-score from precision/recall within tau."""
    d_pred = cKDTree(reference).query(prediction, workers=-1)[0]
    d_ref = cKDTree(prediction).query(reference, workers=-1)[0]
    precision = float(np.mean(d_pred < tau))
    recall = float(np.mean(d_ref < tau))
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return GeometryMetrics(float((d_pred.mean() + d_ref.mean()) / 2), precision, recall, fscore, tau)
