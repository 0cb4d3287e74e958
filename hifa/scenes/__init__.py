"""Analytic scenes with exact ground truth (the oracle world)."""

from hifa.scenes.catalogue import CATALOGUE, SceneSpec, get_scene, scene_names
from hifa.scenes.groundtruth import GroundTruth, GroundTruthRenderer
from hifa.scenes.scene import Part, Scene, scene_from_mesh_file, slugify, textured_part

__all__ = [
    "CATALOGUE",
    "GroundTruth",
    "GroundTruthRenderer",
    "Part",
    "Scene",
    "SceneSpec",
    "get_scene",
    "scene_from_mesh_file",
    "scene_names",
    "slugify",
    "textured_part",
]
