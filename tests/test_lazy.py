"""Heavy libraries load on first use: training, rendering and the CLI's start never import open3d or trimesh."""

import subprocess
import sys
from pathlib import Path

from hifa.lazy import LazyModule

ROOT = Path(__file__).resolve().parents[1]


def test_a_lazy_module_imports_at_the_first_attribute_access():
    code = (
        "import sys\n"
        "from hifa.lazy import LazyModule\n"
        "m = LazyModule('colorsys')\n"
        "print('colorsys' in sys.modules)\n"
        "print(m.rgb_to_hsv(1.0, 0.0, 0.0))\n"
        "print('colorsys' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split("\n")
    assert out[:3] == ["False", "(0.0, 1.0, 1.0)", "True"]


def test_a_lazy_module_says_whether_it_was_imported():
    module = LazyModule("json")
    assert repr(module) == "<lazy module 'json'>"
    assert module.dumps([1]) == "[1]" and repr(module) == "<lazy module 'json' (imported)>"


def test_training_rendering_and_the_cli_start_without_open3d_or_trimesh_and_their_users_load_them(tmp_path):
    code = (
        "import sys\n"
        "import hifa.cli, hifa.config, hifa.training, hifa.trainer, hifa.mesh, hifa.guidance.oracle, hifa.steps.render\n"
        "print('open3d' in sys.modules, 'trimesh' in sys.modules)\n"
        "from hifa.scenes import get_scene\n"
        "mesh = get_scene('green-torus').mesh()\n"
        "print('open3d' in sys.modules, 'trimesh' in sys.modules)\n"
        "import numpy as np\n"
        "from hifa.mesh import Mesh, export_mesh\n"
        "export_mesh(Mesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles)), sys.argv[1])\n"
        "print('open3d' in sys.modules, 'trimesh' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "torus.ply")], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split("\n")[:3] == ["False False", "True False", "True True"], out.stderr
    assert (tmp_path / "torus.ply").stat().st_size > 1000
