"""`hifa report SUITE`: page, Markdown, paper tables and figures, suite metrics and curves,
from a synthetic suite (2 methods x 2 prompts; one run lacks a step, one failed)."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hifa.cli import main
from hifa.report.collect import aggregate, collect
from hifa.report.run import to_value
from tests.report_fixture import make_suite

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = make_suite(tmp_path_factory.mktemp("results") / "demo")
    assert main(["report", str(root)]) == 0
    return root


def test_every_declared_output_exists(suite):
    report, paper = suite / "report", suite / "paper"
    for path in (report / "index.html", report / "report.md", report / "curves.csv", report / "runs.json", report / "figures" / "metrics.png",
                 report / "figures" / "curves.png", suite / "metrics.json", paper / "table_main.tex", paper / "table_main.csv",
                 paper / "per_prompt.csv"):
        assert path.is_file() and path.stat().st_size > 0, path
    for name in ("qualitative", "meshes", "metrics", "training_curves"):
        assert (paper / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        assert Image.open(paper / f"{name}.png").size[0] > 200
    assert not (paper / "table_ablation.tex").exists()  # no ablation in this suite
    assert not [p for p in suite.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_page_is_self_contained(suite):
    report = suite / "report"
    page = (report / "index.html").read_text()
    refs = re.findall(r'(?:src|href|poster)="([^"#]+)"', page)
    assert len(refs) > 40
    for ref in refs:
        assert not ref.startswith(("/", "file:", "http")), ref
        assert (report / ref).exists(), ref
    assert str(suite) not in page
    assert page.count("<img") >= 4 * 4 * 3  # rgb, textureless, depth, normal views of the finished runs
    assert "<video" in page and "turntable.gif" in page  # hifa's MP4 and dreamfusion's GIF
    assert 'href="../runs/hifa/a-red-ball-on-blue-box/mesh/mesh.glb">glb</a>' in page
    assert 'href="../runs/hifa/a-red-ball-on-blue-box/mesh/textured.glb">textured glb</a>' in page
    markdown = (suite / "report" / "report.md").read_text()
    assert "[textured glb](../runs/hifa/a-red-ball-on-blue-box/mesh/textured.glb)" in markdown


def test_missing_and_failed_runs_are_marked(suite):
    page = (suite / "report" / "index.html").read_text()
    markdown = (suite / "report" / "report.md").read_text()
    for text in (page, markdown):
        assert "missing: depth" in text
        assert "failed at mesh: RuntimeError: CUDA out of memory" in text
    assert 'class="badge failed"' in page and 'class="badge incomplete"' in page
    assert "synthetic suite for the report tests" in page and "synthetic suite for the report tests" in markdown
    runs = {(r["method"], r["prompt_slug"]): r for r in json.loads((suite / "report" / "runs.json").read_text())["runs"]}
    assert runs[("dreamfusion", "snowman")]["badge"].startswith("failed at mesh") and runs[("dreamfusion", "snowman")]["status"] == "failed"
    assert runs[("hifa", "snowman")]["badge"] == "missing: depth" and runs[("hifa", "snowman")]["steps"]["depth"] == "missing"
    assert runs[("hifa", "a-red-ball-on-blue-box")]["status"] == "complete"
    assert json.loads((suite / "metrics.json").read_text())["runs"] == {"runs": 4, "complete": 2, "incomplete": 1, "failed": 1, "seeds": 1}


def test_latex_has_booktabs_and_the_right_numbers(suite):
    tex = (suite / "paper" / "table_main.tex").read_text()
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    rows = {line.split(" & ")[0]: line for line in tex.splitlines() if line.startswith(("HiFA &", "DreamFusion &"))}
    # PSNR: hifa 20 and 22 -> 21.00 ± 1.00 (best); dreamfusion: the ball only (snowman failed) -> 15.00
    assert rows["HiFA"].startswith("HiFA & \\textbf{21.00} $\\pm$ 1.00 & \\textbf{0.820} $\\pm$ 0.020 & \\textbf{0.090} $\\pm$ 0.010")
    assert rows["DreamFusion"].startswith("DreamFusion & 15.00 & 0.700 & 0.200 & ")
    assert "\\textbf{0.0090} $\\pm$ 0.0010" in rows["HiFA"]  # chamfer: lower is better
    # R-precision ties (0.750 both): both bold
    assert rows["HiFA"].count("\\textbf{0.750}") == 1 and rows["DreamFusion"].count("\\textbf{0.750}") == 1
    assert "PSNR (dB) $\\uparrow$" in tex and "Chamfer $\\downarrow$" in tex


def leaves(tree):
    return [x for v in tree.values() for x in (leaves(v) if isinstance(v, dict) else [v])]


def test_csv_round_trips(suite):
    document = json.loads((suite / "metrics.json").read_text())
    metrics = document["methods"]
    assert all(isinstance(x, (int, float)) for x in leaves(metrics) + leaves(document["runs"]))  # what `dvc metrics` lists
    with (suite / "paper" / "table_main.csv").open() as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"hifa", "dreamfusion"}
    assert float(rows["hifa"]["psnr_mean"]) == 21.0 and float(rows["hifa"]["psnr_se"]) == 1.0 and rows["hifa"]["psnr_n"] == "2"
    assert rows["dreamfusion"]["psnr_se"] == "" and rows["dreamfusion"]["psnr_n"] == "1"
    for method, row in rows.items():
        for column, cell in row.items():
            if column.endswith("_mean") and cell:
                key = column[: -len("_mean")]
                assert float(cell) == metrics[method][key]["mean"]
                if row[f"{key}_se"]:
                    assert float(row[f"{key}_se"]) == metrics[method][key]["se"]
    clip = [0.30, 0.31, 0.29, 0.30], [0.32, 0.33, 0.31, 0.32]
    assert math.isclose(metrics["hifa"]["clip_score/ViT-B-32"]["mean"], (np.mean(clip[0]) + np.mean(clip[1])) / 2)
    with (suite / "paper" / "per_prompt.csv").open() as handle:
        long = list(csv.DictReader(handle))
    psnr = {(r["method"], r["prompt_slug"]): float(r["value"]) for r in long if r["metric"] == "psnr"}
    assert psnr[("hifa", "snowman")] == 22.0 and psnr[("dreamfusion", "a-red-ball-on-blue-box")] == 15.0


def test_curves_csv_holds_every_logged_row(suite):
    with (suite / "report" / "curves.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames[:5] == ["step", "method", "prompt_slug", "seed", "loss"]
        rows = list(reader)
    assert len(rows) == 4 * 20  # every run trained (dreamfusion/snowman failed later, at mesh)
    assert {r["seed"] for r in rows} == {"0"}
    log = list(csv.DictReader((suite / "runs" / "hifa" / "snowman" / "train_log.csv").open()))
    mine = [r for r in rows if r["method"] == "hifa" and r["prompt_slug"] == "snowman"]
    assert [float(r["latent"]) for r in mine] == [float(r["latent"]) for r in log]
    assert all(r["sds"] == "" for r in mine) and all(r["sds"] for r in rows if r["method"] == "dreamfusion")


def test_ablation_table_and_grid_and_a_clean_rebuild(tmp_path):
    root = make_suite(tmp_path / "abl", methods=("hifa", "dreamfusion", "hifa-no-rgb"), failed=(), missing=())
    (root / "report").mkdir()
    (root / "report" / "stale.txt").write_text("from an older report")
    (root / "paper").mkdir()
    (root / "paper" / "stale.tex").write_text("old")
    from hifa.report import build_report

    build_report(root)
    assert not (root / "report" / "stale.txt").exists() and not (root / "paper" / "stale.tex").exists()
    ablation = (root / "paper" / "table_ablation.tex").read_text()
    assert "HiFA &" in ablation and "HiFA w/o rgb &" in ablation and "DreamFusion" not in ablation
    assert "HiFA w/o rgb" not in (root / "paper" / "table_main.tex").read_text()
    assert (root / "paper" / "ablation.pdf").is_file() and (root / "paper" / "ablation.png").is_file()
    assert "\\textbf{21.00} $\\pm$ 1.00" in ablation


def test_a_run_without_any_folder_is_marked_not_dropped(tmp_path):
    root = make_suite(tmp_path / "s", failed=(), missing=())
    meta = json.loads((root / "suite.json").read_text())
    meta["prompts"]["mug"] = "a mug"
    (root / "suite.json").write_text(json.dumps(meta))
    shutil.rmtree(root / "runs" / "dreamfusion" / "snowman")
    (root / "runs" / "dreamfusion" / "snowman").mkdir()
    (root / "runs" / "dreamfusion" / "snowman" / "FAILED").write_text("")
    suite = collect(root)
    assert suite.slugs == ["a-red-ball-on-blue-box", "snowman", "mug"]
    assert suite.run("hifa", "mug").badge == "missing: train, render, depth, mesh, eval"
    assert suite.run("dreamfusion", "snowman").badge == "failed at train"
    assert suite.prompts["mug"] == "a mug"
    assert suite.aggregate("dreamfusion", "psnr").n == 1


def test_steps_made_before_a_resumed_training_are_stale_and_kept_out_of_the_tables(tmp_path):
    """`hifa train --resume` trained on after render/mesh/eval: the report must not call the run complete."""
    root = make_suite(tmp_path / "s", failed=(), missing=())
    run = root / "runs" / "hifa" / "snowman"
    for step, marker in (("render", "render.json"), ("mesh", "mesh.json"), ("eval", "metrics.json")):
        data = json.loads((run / step / marker).read_text())
        (run / step / marker).write_text(json.dumps({**data, "step": 150}))  # the fixture's training ran to 200
    fresh = root / "runs" / "hifa" / "a-red-ball-on-blue-box" / "eval" / "metrics.json"
    fresh.write_text(json.dumps({**json.loads(fresh.read_text()), "step": 200}))
    suite = collect(root)
    stale = suite.run("hifa", "snowman")
    assert stale.status == "incomplete" and stale.stale == ["render", "mesh", "eval"]
    assert stale.badge == "stale: render, mesh, eval (made at step 150; trained to step 200)"
    assert "psnr" not in stale.metrics and "wall_time_s" in stale.metrics  # eval's scores are of the older field; training's stay
    assert suite.run("hifa", "a-red-ball-on-blue-box").status == "complete"
    assert suite.aggregate("hifa", "psnr").n == 1
    assert main(["report", str(root)]) == 0
    page = (root / "report" / "index.html").read_text()
    assert "stale: render, mesh, eval (made at step 150; trained to step 200)" in page and ">stale</td>" in page


def test_a_parameter_s_definition_is_not_replaced_by_its_value(tmp_path):
    from hifa.report.run import Run, parse_eval

    run = Run("hifa", "torus", tmp_path)
    parse_eval({"groundtruth": {"tau": 0.0123, "extent": 1.2, "definitions": {"tau": "F-score distance: 1% of the extent"}}}, run)
    assert run.notes["tau"] == "F-score distance: 1% of the extent" and run.notes["extent"] == "1.2"


def test_aggregate_and_values():
    agg = aggregate({"a": 20.0, "b": 22.0})
    assert (agg.mean, agg.se, agg.n) == (21.0, 1.0, 2)
    assert aggregate({"a": 3.0}).se is None and aggregate({}) is None
    assert to_value(2) == to_value({"mean": 2}) and to_value(True) is None
    assert to_value([1.0, 3.0]).mean == 2.0 and to_value({"per_view": [1.0, 3.0]}).n == 2


def test_errors_are_one_line(tmp_path, capsys):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert main(["report", str(afile)]) == 2
    assert capsys.readouterr().err.strip() == f"hifa: error: not a folder: {afile} (expected a suite folder holding runs/<method>/<prompt-slug>/)"
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "suite folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no runs found" in err
    assert not (tmp_path / "empty" / "report").exists()


PROMPTS_WANTED = "a non-empty mapping of prompt slugs (folder names without a dot) to prompts"
BAD_MANIFESTS = [
    ({"methods": 5}, "'methods' must be a non-empty list of distinct method names, got 5"),
    ({"methods": "hifa"}, "'methods' must be a non-empty list of distinct method names, got \"hifa\""),
    ({"methods": []}, "'methods' must be a non-empty list of distinct method names, got []"),
    ({"methods": ["hifa", ""]}, "'methods' must be a non-empty list of distinct method names, got [\"hifa\", \"\"]"),
    ({"methods": ["hifa", "hifa"]}, "'methods' must be a non-empty list of distinct method names, got [\"hifa\", \"hifa\"]"),
    ({"methods": ["../../elsewhere"]}, "'methods' must be a non-empty list of distinct method names, got [\"../../elsewhere\"]"),
    ({"seeds": 3}, "'seeds' must be a non-empty list of distinct non-negative integers, got 3"),
    ({"seeds": [-1]}, "'seeds' must be a non-empty list of distinct non-negative integers, got [-1]"),
    ({"seeds": [0, 0]}, "'seeds' must be a non-empty list of distinct non-negative integers, got [0, 0]"),
    ({"seeds": [0, 1.0]}, "'seeds' must be a non-empty list of distinct non-negative integers, got [0, 1.0]"),
    ({"seeds": [True]}, "'seeds' must be a non-empty list of distinct non-negative integers, got [true]"),
    ({"prompts": 5}, f"'prompts' must be {PROMPTS_WANTED}, got 5"),
    ({"prompts": {}}, f"'prompts' must be {PROMPTS_WANTED}, got {{}}"),
    ({"prompts": {"snowman": "a snowman", "x": 5}}, f"'prompts' must be {PROMPTS_WANTED}, got {{\"x\": 5}}"),
    ({"prompts": {"x": " "}}, f"'prompts' must be {PROMPTS_WANTED}, got {{\"x\": \" \"}}"),
    ({"prompts": {"x.seed1": "a x"}}, f"'prompts' must be {PROMPTS_WANTED}, got {{\"x.seed1\": \"a x\"}}"),
    ({"prompts": {"a/b": "a b"}}, f"'prompts' must be {PROMPTS_WANTED}, got {{\"a/b\": \"a b\"}}"),
    ({"suite": 5}, "'suite' must be a string (the suite's name), got 5"),
    ({"world": ["oracle"]}, "'world' must be a string or null, got [\"oracle\"]"),
    ({"description": {"text": "x"}}, "'description' must be a string or null, got {\"text\": \"x\"}"),
]


@pytest.mark.parametrize("change, message", BAD_MANIFESTS, ids=[json.dumps(c) for c, _ in BAD_MANIFESTS])
def test_a_damaged_suite_json_is_one_line_naming_the_key_and_nothing_is_written(tmp_path, capsys, change, message):
    root = make_suite(tmp_path / "s", failed=(), missing=())
    meta = json.loads((root / "suite.json").read_text())
    (root / "suite.json").write_text(json.dumps({**meta, **change}))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert main(["report", str(root)]) == 2
    assert capsys.readouterr().err == f"hifa: error: {root / 'suite.json'}: {message}\n"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_long_bad_value_is_clipped_to_one_short_line(tmp_path, capsys):
    root = make_suite(tmp_path / "s", failed=(), missing=())
    (root / "suite.json").write_text(json.dumps({"methods": "hifa\n" * 100}))
    assert main(["report", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 250 and err.rstrip().endswith("... (602 characters)")  # of JSON text


def test_a_suite_json_from_before_seeds_still_reports(tmp_path):
    """Results made before seeds were a setting: no `seeds`, and the workflow wrote `description: null`."""
    root = make_suite(tmp_path / "old", failed=(), missing=())
    meta = json.loads((root / "suite.json").read_text())
    old = {k: v for k, v in meta.items() if k != "seeds"} | {"description": None, "later": {"x": 1}}
    (root / "suite.json").write_text(json.dumps(old))
    s = collect(root)
    assert s.seeds == [0] and s.methods == ["hifa", "dreamfusion"] and s.description is None and len(s.runs) == 4
    assert main(["report", str(root)]) == 0 and (root / "report" / "index.html").is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/install-system-deps.sh installs it)")
def test_chromium_screenshot_and_dom(suite, tmp_path):
    shot = tmp_path / "report.png"
    proc = subprocess.run([str(REPO / "scripts" / "screenshot-report.sh"), str(suite / "report" / "index.html"), str(shot)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (2400, 1400, 3)
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 500  # text, tables, figures: not blank
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", "--dump-dom",
                          (suite / "report" / "index.html").as_uri()], capture_output=True, text=True, timeout=180).stdout
    assert "<table" in dom and dom.count("<img") >= 48 and "missing: depth" in dom


def test_mesh_strip_takes_the_first_views_of_the_textured_mesh_preview(tmp_path):
    from hifa.report.figures import mesh_strip
    from hifa.report.run import Run

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    preview = np.concatenate([np.full((64, 64, 3), c, dtype=np.uint8) for c in colours], axis=1)  # hifa mesh's row of 4 views
    Image.fromarray(preview).save(tmp_path / "preview.png")
    strip = mesh_strip(Run("hifa", "a-cat", tmp_path, mesh_preview=tmp_path / "preview.png"), views=2, size=32)
    assert strip.shape == (32, 64, 3)
    assert tuple(strip[16, 8]) == colours[0] and tuple(strip[16, 56]) == colours[1]
    assert mesh_strip(Run("hifa", "a-cat", tmp_path), views=2) is None  # no mesh yet: the grid marks the cell missing
