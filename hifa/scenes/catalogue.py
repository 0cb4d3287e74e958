"""The catalogue of analytic scenes, each named by its prompt; objects fit a sphere of radius ~0.45."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hifa.errors import HifaError
from hifa.scenes import shapes
from hifa.scenes.scene import MESH_SUFFIXES, Part, Scene, scene_from_mesh_file

RED, BLUE, GREEN = (0.85, 0.12, 0.1), (0.12, 0.25, 0.8), (0.15, 0.7, 0.2)
WHITE, BLACK, ORANGE = (0.95, 0.95, 0.95), (0.05, 0.05, 0.05), (0.95, 0.5, 0.1)
WOOD, DARK_WOOD, CREAM = (0.62, 0.4, 0.2), (0.4, 0.24, 0.1), (0.93, 0.88, 0.78)


def red_ball_on_blue_box() -> list[Part]:
    return [
        Part(shapes.box((0.5, 0.3, 0.5), center=(0, -0.2, 0)), BLUE),
        Part(shapes.sphere(0.2, center=(0, 0.15, 0)), RED),
    ]


def snowman() -> list[Part]:
    eye_y, eye_z = 0.34, 0.095
    return [
        Part(shapes.sphere(0.22, center=(0, -0.2, 0)), WHITE),
        Part(shapes.sphere(0.16, center=(0, 0.1, 0)), WHITE),
        Part(shapes.sphere(0.11, center=(0, 0.31, 0)), WHITE),
        Part(shapes.cone(0.03, 0.14, center=(0, 0.31, 0.09)), ORANGE),
        Part(shapes.sphere(0.02, center=(-0.04, eye_y, eye_z), resolution=16), BLACK),
        Part(shapes.sphere(0.02, center=(0.04, eye_y, eye_z), resolution=16), BLACK),
    ]


def green_torus() -> list[Part]:
    return [Part(shapes.torus(0.3, 0.11, rotation_deg=(60, 0, 0)), GREEN)]


def mug() -> list[Part]:
    wall = [(0.0, -0.25), (0.2, -0.25), (0.2, 0.25), (0.17, 0.25), (0.17, -0.21), (0.0, -0.21)]
    return [
        Part(shapes.lathe(wall, segments=96, center=(-0.06, 0, 0)), WHITE),
        Part(shapes.torus(0.12, 0.03, center=(0.14, 0.0, 0)), RED),
    ]


def wooden_chair() -> list[Part]:
    leg, half = (0.05, 0.35, 0.05), 0.16
    legs = [Part(shapes.box(leg, center=(sx * half, -0.2, sz * half)), DARK_WOOD) for sx in (-1, 1) for sz in (-1, 1)]
    seat = Part(shapes.box((0.4, 0.05, 0.4), center=(0, 0.0, 0)), WOOD)
    back = Part(shapes.box((0.4, 0.36, 0.05), center=(0, 0.2, -0.175)), WOOD)
    return [*legs, seat, back]


def mushroom() -> list[Part]:
    stem = [(0.0, -0.4), (0.1, -0.4), (0.08, -0.1), (0.065, 0.06), (0.0, 0.06)]
    dome = [(0.38 * math.cos(a), 0.3 * math.sin(a)) for a in [math.pi / 2 * k / 12 for k in range(12)]]
    cap = [(0.0, -0.02), (0.3, -0.02), *((r, y + 0.0) for r, y in dome), (0.0, 0.3)]
    return [Part(shapes.lathe(stem), CREAM), Part(shapes.lathe(cap, segments=96), RED)]


@dataclass(frozen=True)
class SceneSpec:
    """A catalogue entry: a short name, the prompt that names the scene, and its builder."""

    name: str
    prompt: str
    build: Callable[[], list[Part]]

    def scene(self) -> Scene:
        return Scene(self.name, self.prompt, self.build())


CATALOGUE: tuple[SceneSpec, ...] = (
    SceneSpec("red-ball-on-blue-box", "a red ball on a blue box", red_ball_on_blue_box),
    SceneSpec("snowman", "a snowman with a carrot nose", snowman),
    SceneSpec("green-torus", "a green torus", green_torus),
    SceneSpec("mug", "a white mug with a red handle", mug),
    SceneSpec("wooden-chair", "a wooden chair", wooden_chair),
    SceneSpec("mushroom", "a red mushroom with a white stem", mushroom),
)


def scene_names() -> list[str]:
    """Names of the catalogue scenes."""
    return [spec.name for spec in CATALOGUE]


def get_scene(key: str) -> Scene:
    """A scene by catalogue name, by its prompt (case-insensitive), or from a mesh file path."""
    wanted = key.strip().lower()
    for spec in CATALOGUE:
        if wanted in (spec.name, spec.prompt.lower()):
            return spec.scene()
    if wanted and (Path(key).suffix.lower() in MESH_SUFFIXES or Path(key).exists()):
        return scene_from_mesh_file(key)
    raise HifaError(f"unknown scene {key!r}; choose one of: {', '.join(scene_names())} (or give a mesh file path)")
