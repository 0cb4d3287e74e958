"""A synthetic suite folder in the layout `hifa report` reads (small PNGs, known metrics).

SUITE/suite.json and SUITE/runs/<method>/<slug>/ with train, render, depth, mesh and eval
outputs. Images are shaded spheres (colour per method, size per prompt) so the page looks
like a real comparison; the metrics are chosen so that means and errors are easy to check.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

PROMPTS = {"a-red-ball-on-blue-box": "a red ball on a blue box", "snowman": "a snowman"}
COLOURS = {"hifa": (0.85, 0.3, 0.25), "dreamfusion": (0.3, 0.5, 0.85), "hifa-no-rgb": (0.4, 0.7, 0.4)}
# Ground-truth metrics per (method, slug); CLIP score per view.
GROUNDTRUTH = {
    ("hifa", "a-red-ball-on-blue-box"): {"psnr": 20.0, "ssim": 0.80, "depth_mae": 0.10, "chamfer": 0.010, "fscore": 0.70},
    ("hifa", "snowman"): {"psnr": 22.0, "ssim": 0.84, "depth_mae": 0.08, "chamfer": 0.008, "fscore": 0.76},
    ("dreamfusion", "a-red-ball-on-blue-box"): {"psnr": 15.0, "ssim": 0.70, "depth_mae": 0.20, "chamfer": 0.030, "fscore": 0.50},
    ("dreamfusion", "snowman"): {"psnr": 16.0, "ssim": 0.72, "depth_mae": 0.18, "chamfer": 0.025, "fscore": 0.55},
    ("hifa-no-rgb", "a-red-ball-on-blue-box"): {"psnr": 18.0, "ssim": 0.75, "depth_mae": 0.12, "chamfer": 0.015, "fscore": 0.65},
    ("hifa-no-rgb", "snowman"): {"psnr": 19.0, "ssim": 0.77, "depth_mae": 0.11, "chamfer": 0.012, "fscore": 0.68},
}
CLIP_PER_VIEW = {
    ("hifa", "a-red-ball-on-blue-box"): [0.30, 0.31, 0.29, 0.30],
    ("hifa", "snowman"): [0.32, 0.33, 0.31, 0.32],
    ("dreamfusion", "a-red-ball-on-blue-box"): [0.26, 0.27, 0.25, 0.26],
    ("dreamfusion", "snowman"): [0.27, 0.28, 0.26, 0.27],
    ("hifa-no-rgb", "a-red-ball-on-blue-box"): [0.28, 0.29, 0.27, 0.28],
    ("hifa-no-rgb", "snowman"): [0.29, 0.30, 0.28, 0.29],
}
VIEWS = 4
SIZE = 64


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def sphere(view: int, radius: float, size: int = SIZE):
    """Unit normals, mask and depth of a sphere, lit from a direction that turns with the view."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    x, y = x / radius, -y / radius
    mask = (x**2 + y**2) < 1
    z = np.sqrt(np.clip(1 - x**2 - y**2, 0, 1))
    normals = np.stack([x, y, z], -1) * mask[..., None]
    angle = 2 * np.pi * view / VIEWS
    light = np.array([np.cos(angle), 0.6, np.sin(angle) * 0.5 + 0.8])
    shade = np.clip(normals @ (light / np.linalg.norm(light)), 0, 1) * mask
    return normals, mask, 1.5 - 0.5 * z * mask, shade


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def make_run(run: Path, method: str, slug: str, prompt: str, skip: tuple[str, ...] = (), failed_at: str | None = None,
             psnr_shift: float = 0.0) -> None:
    """One run folder; `skip` leaves steps out, `failed_at` stops there with a FAILED marker; `psnr_shift`
    is added to the ground-truth PSNR (another seed's run)."""
    colour = np.array(COLOURS.get(method, (0.6, 0.6, 0.6)))
    radius = 0.75 if slug == "snowman" else 0.6
    order = ("train", "render", "depth", "mesh", "eval")
    steps = order[: order.index(failed_at)] if failed_at else order
    views = [sphere(v, radius) for v in range(VIEWS)]
    rgbs = [(0.25 + 0.75 * shade[..., None]) * colour * mask[..., None] + (1 - mask[..., None]) for _, mask, _, shade in views]
    if "train" in steps and "train" not in skip:
        write(run / "config.yaml", f"preset: {method}\nprompt: {prompt}\n")
        terms = ("latent", "image", "depth", "zvar") if method.startswith("hifa") else ("sds", "orientation")
        lines = [",".join(("step", "loss", *terms, "t", "lr", "grad_norm", "time_s"))]
        for step in range(10, 210, 10):
            values = [1000.0 / step * (1 + 0.1 * (i + 1)) for i in range(len(terms))]
            lines.append(",".join(str(v) for v in (step, sum(values), *values, 900 - 4 * step, 0.005, 1.5, step * 0.4)))
        write(run / "train_log.csv", "\n".join(lines) + "\n")
        write(run / "final_views.png", png(np.concatenate(rgbs, axis=1)))
        for step in (100, 200):
            write(run / "validation" / f"step_{step:06d}.png", png(np.concatenate(rgbs, axis=1) * step / 200))
        summary = {"steps": 200, "wall_time_s": 120.0 if method == "hifa" else 90.0, "preset": method, "prompt": prompt, "prior": "oracle"}
        write(run / "train_summary.json", json.dumps(summary))
    if "render" in steps and "render" not in skip:
        for v, (normals, mask, depth, shade) in enumerate(views):
            write(run / "render" / "rgb" / f"{v:03d}.png", png(rgbs[v]))
            write(run / "render" / "depth" / f"{v:03d}.png", png(np.repeat(((2 - depth) * mask)[..., None], 3, -1)))
            write(run / "render" / "normal" / f"{v:03d}.png", png((normals * 0.5 + 0.5) * mask[..., None] + (1 - mask[..., None])))
            write(run / "render" / "opacity" / f"{v:03d}.png", png(np.repeat(mask[..., None].astype(float), 3, -1)))
            grey = (0.2 + 0.8 * shade) * mask + (1 - mask)
            write(run / "render" / "textureless" / f"{v:03d}.png", png(np.repeat(grey[..., None], 3, -1)))
        frames = [(np.clip(x, 0, 1) * 255).astype(np.uint8) for x in rgbs]
        if method == "hifa":  # as `hifa render` writes it; other methods get the GIF fallback
            import imageio.v2 as imageio

            imageio.mimwrite(run / "render" / "turntable.mp4", frames, fps=4, codec="libx264", macro_block_size=16)
        else:
            images = [Image.fromarray(f) for f in frames]
            buffer = io.BytesIO()
            images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=200, loop=0)
            write(run / "render" / "turntable.gif", buffer.getvalue())
        write(run / "render" / "contact_sheet.png", png(np.concatenate(rgbs, axis=1)))
        write(run / "render" / "render.json", json.dumps({"views": VIEWS, "resolution": SIZE}))
    if "depth" in steps and "depth" not in skip:
        consistency = {"abs_rel": 0.05 if method == "hifa" else 0.09, "pearson": 0.9 if method == "hifa" else 0.8, "views_scored": VIEWS,
                       "per_view": [{"abs_rel": 0.05, "pearson": 0.9}] * VIEWS, "definition": "scale/shift-aligned estimate vs rendered disparity"}
        write(run / "depth" / "depth.json", json.dumps({"consistency": consistency, "estimator": {"kind": "oracle"}}))
    if "mesh" in steps and "mesh" not in skip:
        write(run / "mesh" / "mesh.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
        write(run / "mesh" / "mesh.ply", "ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
        write(run / "mesh" / "mesh.glb", b"glTF\x02\x00\x00\x00")
        write(run / "mesh" / "textured.glb", b"glTF\x02\x00\x00\x00")
        write(run / "mesh" / "preview.png", png(rgbs[0]))
        write(run / "mesh" / "mesh.json", json.dumps({"faces": 1, "vertices": 3}))
    if "eval" in steps and "eval" not in skip:
        per_view = CLIP_PER_VIEW[(method, slug)]
        mean = float(np.mean(per_view))
        se = float(np.std(per_view, ddof=1) / np.sqrt(len(per_view)))
        metrics = {
            "schema": "hifa.metrics/1", "prompt": prompt, "method": method, "prior": "oracle", "views": VIEWS,
            "clip": {"ViT-B/32": {"model": "ViT-B/32", "clip_score": {"mean": mean, "se": se, "definition": "cosine(image, text), mean over views"},
                                  "clip_score_textureless": {"mean": mean - 0.05, "se": se},
                                  "r_precision": {"colour": 0.75, "textureless": 0.5, "captions": 4,
                                                  "definition": "top-1 over the suite's prompts"}}},
            "groundtruth": {**{k: {"mean": v + psnr_shift, "per_view": [v + psnr_shift] * VIEWS} if k == "psnr" else v
                               for k, v in GROUNDTRUTH[(method, slug)].items()},
                            "tau": 0.02, "extent": 1.2, "scene": slug, "mask_iou": 0.9, "surface_points": 2000,
                            "definitions": {"psnr": "PSNR of the rendered RGB against ground truth, mean over views"}},
            "versions": {"hifa": "0.1.0", "torch": "2.14.1"},
        }
        write(run / "eval" / "metrics.json", json.dumps(metrics))
    if failed_at:
        write(run / "FAILED", f"{failed_at}: RuntimeError: CUDA out of memory\ntraceback...\n")


def make_suite(root: Path, methods=("hifa", "dreamfusion"), failed=(("dreamfusion", "snowman", "mesh"),),
               missing=(("hifa", "snowman", ("depth",)),), world: str = "oracle") -> Path:
    """2 methods x 2 prompts by default: dreamfusion/snowman failed at mesh, hifa/snowman lacks depth."""
    root.mkdir(parents=True, exist_ok=True)
    write(root / "suite.json", json.dumps({"suite": root.name, "methods": list(methods), "prompts": PROMPTS, "world": world,
                                                "description": "synthetic suite for the report tests"}))
    failed_at = {(m, s): step for m, s, step in failed}
    skips = {(m, s): tuple(steps) for m, s, steps in missing}
    for method in methods:
        for slug, prompt in PROMPTS.items():
            make_run(root / "runs" / method / slug, method, slug, prompt, skips.get((method, slug), ()), failed_at.get((method, slug)))
    return root


def make_seeded_suite(root: Path, shifts: dict[int, float], methods=("hifa", "dreamfusion"), failed=()) -> Path:
    """Methods x PROMPTS x seeds (the keys of `shifts`, each seed's PSNR shifted by its value), in the
    workflow's folders (runs/<method>/<slug>[.seed<N>]); `failed`: (method, slug, seed, step)."""
    from hifa.run_names import run_name

    root.mkdir(parents=True, exist_ok=True)
    write(root / "suite.json", json.dumps({"suite": root.name, "methods": list(methods), "prompts": PROMPTS, "seeds": list(shifts),
                                            "world": "oracle"}))
    failed_at = {(m, s, seed): step for m, s, seed, step in failed}
    for method in methods:
        for slug, prompt in PROMPTS.items():
            for seed, shift in shifts.items():
                make_run(root / "runs" / method / run_name(slug, seed), method, slug, prompt, failed_at=failed_at.get((method, slug, seed)),
                         psnr_shift=shift)
    return root
