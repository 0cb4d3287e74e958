"""UV atlases for baked textures: open3d's UVAtlas, else xatlas, else one chart per triangle.

Both libraries can crash their whole process on some meshes (measured: UVAtlas on a non-manifold edge, which
marching cubes and decimation can leave; xatlas 0.0.11 on the 82k-face icosphere), so each runs in a
child process and a crash moves on to the next. UVAtlas goes first: on the nine demo meshes it made 4-65
charts where xatlas made 218-561 (fewer seams), with the same mesh PSNR and about the same time
(benchmarks/results/mesh-colour-cpu.md). UVAtlas does not seed its random draws, so its charts differ from
run to run; xatlas's do not, and `mesh.atlas=xatlas` puts it first for textures a rerun reproduces byte for byte.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from hifa.errors import HifaError
from hifa.io import write_npz_atomic

log = logging.getLogger(__name__)
PADDING = 2  # texels between charts, so bilinear filtering at a chart's edge never reads its neighbour
# (source vertex of each atlas vertex, atlas faces, atlas UVs, chart count)
Charts = tuple[np.ndarray, np.ndarray, np.ndarray, int]
ChartMaker = Callable[[np.ndarray, np.ndarray, int], Charts]
AtlasName = Literal["uvatlas", "xatlas"]
ATLASES = get_args(AtlasName)
CHILD_TIMEOUT = 600.0  # seconds for one atlas (xatlas took 20-30 s for 100k faces on 2 cores)


class ChildFailed(HifaError):
    """The atlas process crashed, failed or hung; `unavailable` when its library could not be imported."""

    def __init__(self, message: str, unavailable: bool = False):
        super().__init__(message)
        self.unavailable = unavailable


@dataclass
class Atlas:
    """The mesh split along UV seams: each new vertex's source vertex, the faces over new vertices, their UVs."""

    source: np.ndarray  # (V',) indices into the original vertices
    faces: np.ndarray  # (F, 3) indices into the new vertices
    uvs: np.ndarray  # (V', 2) in [0, 1]
    charts: int
    method: str


def uvatlas_charts(vertices: np.ndarray, faces: np.ndarray, size: int) -> Charts:
    """open3d's UVAtlas (per-corner UVs), merged back into vertices per (vertex, UV) pair."""
    from hifa.lazy import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)  # it announces its partition count at INFO
    mesh = o3d.t.geometry.TriangleMesh()
    mesh.vertex.positions = o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32))
    mesh.triangle.indices = o3d.core.Tensor(np.ascontiguousarray(faces, np.int64))
    _, charts, _ = mesh.compute_uvatlas(size=int(size), gutter=float(PADDING), parallel_partitions=2)
    corner_uv = mesh.triangle.texture_uvs.numpy().reshape(-1, 2).astype(np.float64)
    keys = np.concatenate([np.asarray(faces).reshape(-1, 1).astype(np.float64), corner_uv], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return unique[:, 0].astype(np.int64), inverse.reshape(-1, 3).astype(np.int64), unique[:, 1:], int(charts)


def xatlas_charts(vertices: np.ndarray, faces: np.ndarray, size: int) -> Charts:
    """xatlas's charts packed for about an S x S texture (it packs a little larger; the UVs are normalised)."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear = int(size), PADDING, True
    atlas.generate(xatlas.ChartOptions(), pack)
    source, new_faces, uvs = atlas[0]
    return source.astype(np.int64), new_faces.astype(np.int64), uvs.astype(np.float64), int(atlas.chart_count)


def atlas_order(first: AtlasName) -> tuple[ChartMaker, ...]:
    """The atlas libraries to try in turn: `first`, then the other."""
    makers = (uvatlas_charts, xatlas_charts)
    return makers if first == "uvatlas" else makers[::-1]


def cell_layout(count: int, size: int) -> tuple[int, int]:
    """(cells per side, texels per cell side) of the one-cell-per-triangle layout of `count` faces on S x S texels."""
    per_side = int(np.ceil(np.sqrt(count)))
    cell = size // per_side
    if cell < 1:
        raise HifaError(f"a {size}x{size} texture has fewer texels than the mesh has faces ({count}); use a texture size of at least {per_side}")
    return per_side, cell


def triangle_charts(faces: np.ndarray, size: int) -> Charts:
    """One chart per triangle: face i a right triangle inset half a texel in cell i of a texel-aligned grid.

    Baked flat (`hifa.texture.bake_cells`: each cell the colour at its face's centroid), so a face smaller than a
    texel keeps its own colour and bilinear filtering never reads a neighbouring cell.
    """
    count = len(faces)
    per_side, cell = cell_layout(count, size)
    index = np.arange(count)
    x0, y0 = (index % per_side) * cell + 0.5, (index // per_side) * cell + 0.5  # texel centres: image x right, y down
    x1, y1 = x0 + cell - 1, y0 + cell - 1
    corners = np.stack([np.stack([x0, y1], -1), np.stack([x1, y1], -1), np.stack([x0, y0], -1)], axis=1)  # (F, 3, 2)
    uvs = np.stack([corners[..., 0] / size, 1.0 - corners[..., 1] / size], axis=-1)
    return np.asarray(faces).reshape(-1).astype(np.int64), np.arange(3 * count).reshape(count, 3), uvs.reshape(-1, 2), count


# The child: put the parent's import path first, then chart (sys.path travels as JSON, not through PYTHONPATH,
# whose separator may occur inside a path).
CHILD = "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); from hifa.uv_atlas import child_main; child_main(*sys.argv[2:5])"
UNAVAILABLE = 3  # the child's exit status when the maker or its library cannot be imported


def maker_target(maker: ChartMaker) -> str:
    """'module:name' of a module-level function, for the child to import (a script's function by its module name)."""
    module, name = getattr(maker, "__module__", None), getattr(maker, "__qualname__", "")
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else None
    if not module or not name.isidentifier():
        raise TypeError(f"an atlas maker must be a module-level function of an importable module, not {maker!r}")
    return f"{module}:{name}"


def in_child(maker: ChartMaker, vertices: np.ndarray, faces: np.ndarray, size: int, timeout: float = CHILD_TIMEOUT) -> Charts:
    """maker(vertices, faces, size) in a fresh Python process; its crash, error or hang raises ChildFailed.

    A plain subprocess, not multiprocessing: spawn re-imports the caller's __main__, which re-runs any script
    that calls this without an `if __name__ == "__main__"` guard.
    """
    target = maker_target(maker)
    with tempfile.TemporaryDirectory(prefix="hifa-atlas-") as tmp:
        given, result = Path(tmp) / "mesh.npz", Path(tmp) / "charts.npz"
        write_npz_atomic(given, vertices=vertices, faces=faces, size=np.int64(size))
        try:
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(sys.path), target, str(given), str(result)],
                                  capture_output=True, text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ChildFailed(f"no atlas after {timeout:.0f} s") from None
        except OSError as exc:
            raise ChildFailed(f"cannot start {sys.executable!r}: {exc}") from None
        if proc.returncode != 0 or not result.is_file():
            last, status = (proc.stderr.strip().splitlines() or [""])[-1][:200], f"exit status {proc.returncode}"
            if proc.returncode == UNAVAILABLE:
                raise ChildFailed(last or status, True)
            raise ChildFailed(f"{status}: {last}" if last else status)
        with np.load(result) as out:
            return out["source"], out["faces"], out["uvs"], int(out["charts"])


def child_main(target: str, given: str, result: str) -> None:
    """The child's side of `in_child`: import the maker, chart the mesh, write the charts."""
    module, name = target.split(":")
    with np.load(given) as mesh:
        vertices, faces, size = mesh["vertices"], mesh["faces"], int(mesh["size"])
    try:
        maker = getattr(importlib.import_module(module), name)
        charts = maker(vertices, faces, size)
    except ImportError as exc:  # the library is missing: not this mesh's fault
        print(f"{exc.__class__.__name__}: {exc}", file=sys.stderr)
        sys.exit(UNAVAILABLE)
    source, new_faces, uvs, count = charts
    write_npz_atomic(result, source=source, faces=new_faces, uvs=uvs, charts=np.int64(count))


def uv_atlas(vertices: np.ndarray, faces: np.ndarray, size: int, makers: Sequence[ChartMaker] = (uvatlas_charts, xatlas_charts)) -> Atlas:
    """The first atlas of `makers` that works (each in a child process), else one chart per triangle."""
    if len(faces) == 0:
        raise HifaError("cannot texture an empty mesh")
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    for maker in makers:
        name = maker.__name__.removesuffix("_charts")
        try:
            source, new_faces, uvs, charts = in_child(maker, vertices, faces, size)
        except ChildFailed as exc:  # a crashed child, or the library's own error: try the next
            what = "is not available" if exc.unavailable else "failed on this mesh"
            log.warning("mesh texture: %s %s (%s); trying the next atlas", name, what, exc)
            continue
        if len(new_faces) == len(faces) and np.array_equal(source[new_faces], faces):
            return Atlas(source, new_faces, np.clip(uvs, 0.0, 1.0), charts, name)
        log.warning("mesh texture: %s changed the mesh's faces; trying the next atlas", name)
    log.warning("mesh texture: no atlas library charted this mesh; each triangle gets its own flat-coloured cell (coarser texture)")
    source, new_faces, uvs, charts = triangle_charts(faces, size)
    return Atlas(source, new_faces, uvs, charts, "per-triangle")
