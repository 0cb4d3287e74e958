"""Modules imported on first use, for heavy libraries most commands never touch."""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Stands for a module and imports it at the first attribute access."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"


# Each costs ~0.5 s at import (trimesh through scipy.spatial and networkx). Scenes, meshes and their
# exports need them; training, rendering and the CLI's start do not.
open3d = LazyModule("open3d")
trimesh = LazyModule("trimesh")
