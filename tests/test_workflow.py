"""The Snakemake workflow and its DVC stage.

Fast: the paper suites' DAG (dry run: job counts, resources, slugs, quoting) and the config schema's
errors. Slow (one real run, shared): the smoke suite (tiny world) through `dvc repro`, every declared
output, `dvc metrics show`, `dvc push` to the default remote, a no-op re-run, and a re-run after
deleting one run's mesh that runs only what depends on it (while another run resumes its training).
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from hifa.presets import PRESETS
from hifa.scenes import slugify
from tests.workflow_helpers import (
    ROOT,
    BIN,
    copy_pipeline,
    dry_run_jobs,
    job_counts,
    parse_pairs,
    run,
    snakemake,
)

SMOKE = "config/suites/smoke.yaml"
PAPER_STEPS = ("train", "render", "estimate_depth", "extract_mesh", "evaluate")


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --- the paper suites (dry run) -------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory) -> str:
    """`snakemake -n -p --cores 8` with no --configfile: config/config.yaml, run in an empty folder."""
    workdir = tmp_path_factory.mktemp("paper-dry-run")
    proc = snakemake(["-s", str(ROOT / "Snakefile"), "-d", str(workdir), "-n", "-p", "--cores", "8"], workdir, timeout=300)
    return proc.stdout + proc.stderr


def test_paper_suite_dag_has_every_job(paper_dry_run):
    config = load_yaml(ROOT / "config" / "config.yaml")
    paper, ablation = config["suites"]["paper"], config["suites"]["ablation"]
    assert paper["methods"] == ["hifa", "dreamfusion"] and len(paper["prompts"]) == 37  # method.md A.1
    assert ablation["methods"] == ["hifa", "hifa-no-anneal", "hifa-no-rgb", "hifa-no-depth", "hifa-no-zvar", "hifa-1step", "hifa-no-smoothing"]
    assert ablation["prompts"] == ["a ladybug", "a wooden buddha head", "a bottle of beer", "head of thanos",
                                   "a highly detailed stone bust of Theodoros Kolokotronis"]  # first five of A.4
    runs = 2 * 37 + 7 * 5
    counts = job_counts(paper_dry_run)
    assert counts == {**{step: runs for step in PAPER_STEPS}, "suite_manifest": 2, "suite_prompts": 2, "report": 2, "all": 1}, counts


def test_paper_suite_dag_resources_threads_and_slugs(paper_dry_run):
    jobs = dry_run_jobs(paper_dry_run)
    trains = [j for j in jobs if j["rule"] == "train"]
    assert len(trains) == 109
    slugs = set()
    for job in trains:
        wildcards, resources = parse_pairs(job["wildcards"]), parse_pairs(job["resources"])
        slow = wildcards["method"] != "dreamfusion"
        assert resources["gpu"] == "1" and resources["cpus_per_task"] == "8" and job["threads"] == "8"
        assert resources["mem_mb"] == ("32000" if slow else "24000") and resources["runtime"] == ("480" if slow else "180")
        if wildcards["suite"] == "paper":
            slugs.add(wildcards["slug"])
    for job in jobs:
        if job["rule"] in ("render", "estimate_depth", "extract_mesh", "evaluate"):
            assert parse_pairs(job["resources"])["gpu"] == "1", job
        if job["rule"] == "report":
            assert parse_pairs(job["resources"])["gpu"] == "0", job
    prompts = load_yaml(ROOT / "config" / "config.yaml")["suites"]["paper"]["prompts"]
    expected = {slugify(p) if isinstance(p, str) else p["slug"] for p in prompts}
    assert slugs == expected and len(slugs) == 37
    # The prompt reaches `hifa train` as one shell-quoted argument, never as raw text.
    assert "--prompt 'Michelangelo style statue of dog reading news on a cellphone' --method" in paper_dry_run
    assert "--prompt 'a stylized witch pot made of stone or mud with a wide base and a narrow neck, decorated" in paper_dry_run
    assert "--budget" not in paper_dry_run  # real-world suites do not pass the oracle budget


def test_methods_in_schema_match_presets():
    schema = load_yaml(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    assert set(schema["$defs"]["method"]["enum"]) == set(PRESETS)


def test_every_dvc_stage_versions_all_of_its_suites_results():
    """What a `dvc pull` must bring for Snakemake and the report to take the results as they are: per suite of a stage,
    the runs, report, paper files, the manifest (suite.json: slugs and seeds) and prompts.txt (an input of every evaluation)."""
    stages = load_yaml(ROOT / "dvc.yaml")["stages"]
    for name, stage in stages.items():
        suites = [key.split(".", 1)[1] for entry in stage["params"] for keys in entry.values() for key in keys]
        outs = {next(iter(o)) for o in stage["outs"]}
        metrics = {next(iter(m)) for m in stage["metrics"]}
        for suite in suites:
            expected = {f"results/{suite}/{part}" for part in ("runs", "report", "paper", "suite.json", "prompts.txt")}
            assert expected <= outs, (name, suite, expected - outs)
            assert f"results/{suite}/metrics.json" in metrics, (name, suite)


def test_conda_env_pins_the_project_stack():
    import tomllib

    pins = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    env = load_yaml(ROOT / "workflow" / "envs" / "hifa.yaml")
    pip = set(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)))
    workflow_tools = {p for p in pins if p.startswith(("snakemake", "dvc"))}
    assert pip == pins - workflow_tools


# --- the config schema ----------------------------------------------------------------------

BAD_CONFIGS = {
    "unknown method": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa", "hifa-turbo"], "prompts": ["a green torus"]}}},
        r"invalid config \(\S+\) at suites\.bad\.methods\.1: 'hifa-turbo' is not one of \['hifa'",
    ),
    "missing prompts": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"]}}},
        r"invalid config \(\S+\) at suites\.bad: 'prompts' is a required property",
    ),
    "misspelt key": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"], "render": {"view": 8}}}},
        r"invalid config \(\S+\) at suites\.bad\.render: Additional properties are not allowed \('view' was unexpected\)",
    ),
    "wrong type": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"], "resources": {"train": {"mem_mb": "lots"}}}}},
        r"invalid config \(\S+\) at suites\.bad\.resources\.train\.mem_mb: 'lots' is not of type 'integer'",
    ),
    "unknown train.set key": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa", "dreamfusion"], "prompts": ["a green torus"],
                            "train": {"methods": {"dreamfusion": {"set": {"renderer.foo": 3}}}}}}},
        r"invalid config \(\S+\): suite bad, method dreamfusion: config 'renderer\.foo': unknown key",
    ),
    "bad train.set value": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"], "train": {"set": {"iterations": -5}}}}},
        r"invalid config \(\S+\): suite bad, method hifa: config 'iterations': ",
    ),
    "prompt outside the oracle catalogue": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus", "a blue cat"]}}},
        r"invalid config \(\S+\): suite bad, prompt 'a blue cat': ",
    ),
    "seed in train.set": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"], "train": {"set": {"seed": 3}}}}},
        r"invalid config \(\S+\) at suites\.bad\.train\.set: set the seeds with suites\.bad\.seeds \(a list\), not train\.set\.seed",
    ),
    "repeated seed": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"], "seeds": [0, 1, 1]}}},
        r"invalid config \(\S+\) at suites\.bad\.seeds: \[0, 1, 1\] has non-unique elements",
    ),
    "non-integer seed": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"], "seeds": [0, 1.0]}}},
        r"invalid config \(\S+\) at suites\.bad\.seeds\.1: 1\.0 is not an integer",
    ),
    "texture too small": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"], "mesh": {"texture_size": 8}}}},
        r"invalid config \(\S+\) at suites\.bad\.mesh\.texture_size: 8 is less than the minimum of 16",
    ),
    "mesh threshold neither a density nor otsu": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"], "mesh": {"threshold": "auto"}}}},
        r"invalid config \(\S+\) at suites\.bad\.mesh\.threshold: 'auto' does not match '\^otsu\$'",
    ),
    "empty prompt": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus", ""]}}},
        r"invalid config \(\S+\) at suites\.bad\.prompts\.1: '' should be non-empty",
    ),
    "slug with a path": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": [{"prompt": "a green torus", "slug": "../x"}]}}},
        r"invalid config \(\S+\) at suites\.bad\.prompts\.0\.slug: '\.\./x' does not match ",
    ),
    "mesh resolution too small": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"], "mesh": {"resolution": 2}}}},
        r"invalid config \(\S+\) at suites\.bad\.mesh\.resolution: 2 is less than the minimum of 8",
    ),
    "settings for a method the suite does not run": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"],
                            "train": {"methods": {"dreamfusion": {"set": {"iterations": 5}}}}}}},
        r"invalid config \(\S+\) at suites\.bad\.train\.methods\.dreamfusion: 'dreamfusion' is not one of the suite's methods \['hifa'\]",
    ),
    "no suites": (
        {"suites": {}},
        r"invalid config \(\S+\) at suites: \{\} should be non-empty",
    ),
    "slug collision": (
        {"suites": {"bad": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus", "A green torus!"]}}},
        r"invalid config \(\S+\) at suites\.bad\.prompts\.1: prompt 'A green torus!' has the slug 'a-green-torus' of 'a green torus'; give one of them an explicit slug",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_schema_rejects_a_malformed_config_with_a_clear_message(case, tmp_path):
    config, message = BAD_CONFIGS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(["-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(path), "-n"], tmp_path, check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(message, output), output[-3000:]
    assert "Traceback" not in output


def test_suites_are_checked_up_front_only_where_hifa_runs(tmp_path):
    """A `hifa` command that cannot run here (a conda env not built yet) leaves the checks to the jobs."""
    config = {"hifa": "false", "suites": {"ok": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a blue cat"]}}}
    path = tmp_path / "unchecked.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(["-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(path), "-n"], tmp_path, timeout=120)
    assert "workflow: could not check the suites up front (exit status 1); each job checks its own settings" in proc.stderr
    assert job_counts(proc.stdout)["train"] == 1


def test_mesh_and_render_options_reach_their_commands(tmp_path):
    config = {"suites": {"ok": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"],
                                "render": {"views": 6, "chunk_rays": 2048},
                                "mesh": {"resolution": 128, "texture_size": 2048, "atlas": "xatlas", "threshold": 12.5}}}}
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(["-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(path), "-n", "-p"], tmp_path, timeout=120)
    assert "mesh results/ok/runs/hifa/a-green-torus --resolution 128 --texture-size 2048 --atlas xatlas --threshold 12.5" in proc.stdout
    assert "render results/ok/runs/hifa/a-green-torus --views 6 --chunk-rays 2048 --quiet" in proc.stdout


def test_every_job_shares_one_compile_cache(tmp_path):
    """torch.compile's cache reaches every job: <results>/.compile-cache by default (not each node's /tmp),
    $TORCHINDUCTOR_CACHE_DIR when set, config `compile_cache` over both."""
    from tests.workflow_helpers import tool_env

    config = {"suites": {"c": {"prior": "oracle", "methods": ["hifa"], "prompts": ["a green torus"]}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))

    def caches(env: dict | None = None, *extra: str) -> set[str]:
        args = ["-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(path), *extra, "-n", "-p"]
        out = snakemake(args, tmp_path, timeout=120, env=env).stdout
        assert out.count("TORCHINDUCTOR_CACHE_DIR=") >= 6, out[-3000:]  # train, render, depth, mesh, evaluate, report
        return set(re.findall(r"TORCHINDUCTOR_CACHE_DIR=('[^']*'|[^\s;]+);", out))

    assert caches() == {str(tmp_path / "results" / ".compile-cache")}
    assert caches(tool_env(TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "shared"))) == {str(tmp_path / "shared")}
    configured = tmp_path / "with space" / "cache"
    assert caches(tool_env(TORCHINDUCTOR_CACHE_DIR="/elsewhere"), "--config", f"compile_cache={configured}") == {f"'{configured}'"}


def workflow_functions(*names: str) -> dict:
    """Top-level functions of workflow/rules/common.smk, by name (the file itself is Snakemake, not Python)."""
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    namespace: dict = {}
    for name in names:
        match = re.search(rf"^def {name}\(.*?(?=^\S)", text, re.M | re.S)
        assert match, name
        exec(match.group(0), namespace)
    return namespace


def test_the_workflow_names_run_folders_as_hifa_does():
    from hifa.run_names import parse_run_name, run_name

    smk = workflow_functions("run_name", "split_run_name")
    constraint = re.search(r'^    slug=r"(.+?)",', (ROOT / "workflow" / "rules" / "common.smk").read_text(), re.M).group(1)
    for slug in ("a", "a-green-torus", "x1-2-3"):
        for seed in (0, 1, 2, 17, 2**40):
            name = run_name(slug, seed)
            assert smk["run_name"](slug, seed) == name and smk["split_run_name"](name) == parse_run_name(name) == (slug, seed)
            assert re.fullmatch(constraint, name)  # Snakemake's `slug` wildcard matches every run folder


def test_seeds_make_one_run_folder_each_and_reach_hifa_train(tmp_path):
    """suites.X.seeds: seed 0 keeps the bare slug folder (and a command without --set seed), other seeds get
    <slug>.seed<N> folders (hifa.run_names) and `--set seed=N`; the manifest names the seeds."""
    from hifa.run_names import parse_run_name, run_name

    config = {"suites": {"s": {"prior": "oracle", "methods": ["hifa", "dreamfusion"], "prompts": ["a green torus"], "seeds": [0, 2, 11]}}}
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(["-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(path), "-n", "-p"], tmp_path, timeout=120)
    output = proc.stdout + proc.stderr
    trains = [j for j in dry_run_jobs(output) if j["rule"] == "train"]
    folders = {(parse_pairs(j["wildcards"])["method"], parse_pairs(j["wildcards"])["slug"]) for j in trains}
    assert folders == {(m, run_name("a-green-torus", seed)) for m in ("hifa", "dreamfusion") for seed in (0, 2, 11)}
    assert {parse_run_name(name) for _, name in folders} == {("a-green-torus", seed) for seed in (0, 2, 11)}
    assert job_counts(output)["evaluate"] == 6 and job_counts(output)["report"] == 1
    commands = [line for line in output.splitlines() if "--prompt 'a green torus'" in line and "--out" in line]
    assert len(commands) == 6
    for seed in (2, 11):  # each command names its run in its log's path
        mine = [c for c in commands if f"/a-green-torus.seed{seed}.log" in c]
        assert len(mine) == 2 and all(f"--set seed={seed} " in c for c in mine), mine
    bare = [c for c in commands if "/a-green-torus.log" in c]
    assert len(bare) == 2 and not any("seed=" in c for c in bare)


# --- the smoke suite for real ---------------------------------------------------------------
# One real run, checked step by step in one test: pytest-xdist spreads tests over workers, so
# separate tests would each need their own run (xdist's loadgroup does not keep them together
# under pytest 9 here).


def declared_outputs(repo: Path) -> list[tuple[str, str]]:
    """(file, status) of every output the smoke suite declares (`snakemake --summary`)."""
    proc = snakemake(["--configfile", SMOKE, "--summary"], repo, timeout=300)
    rows = [line.split("\t") for line in proc.stdout.splitlines() if "\t" in line]
    header = rows[0]
    return [(row[header.index("output_file")], row[header.index("status")]) for row in rows[1:]]


RUN_DIRS = [f"results/smoke/runs/{m}/a-dslr-photo-of-a-corgi" for m in ("hifa", "dreamfusion")]  # seed 0
SEED_DIRS = [f"{d}.seed1" for d in RUN_DIRS]  # the smoke suite's second seed
RUN_FILES = ("train_summary.json", "weights.pt", "final_views.png", "render/render.json", "render/contact_sheet.png", "depth/depth.json",
             "mesh/mesh.json", "mesh/mesh.ply", "mesh/mesh.obj", "mesh/mesh.glb", "mesh/preview.png",
             "mesh/textured.glb", "mesh/textured.obj", "mesh/textured.mtl", "mesh/textured.png", "eval/metrics.json")


def check_every_declared_output(repo: Path) -> None:
    outputs = declared_outputs(repo)
    files = {f for f, _ in outputs}
    for run_dir in RUN_DIRS + SEED_DIRS:
        for name in RUN_FILES:
            assert f"{run_dir}/{name}" in files
    for name in ("results/smoke/metrics.json", "results/smoke/report", "results/smoke/paper", "results/smoke/suite.json", "results/tiny-world/sd"):
        assert name in files
    missing = [(f, s) for f, s in outputs if s != "ok" or not (repo / f).exists()]
    assert not missing, missing
    for name in ("index.html", "report.md", "curves.csv"):
        assert (repo / "results/smoke/report" / name).is_file()
    assert (repo / "results/smoke/paper/table_main.tex").is_file()
    manifest = json.loads((repo / "results/smoke/suite.json").read_text())
    assert manifest["prompts"] == {"a-dslr-photo-of-a-corgi": "a DSLR photo of a corgi"}
    assert manifest["methods"] == ["hifa", "dreamfusion"] and manifest["world"] == "tiny" and manifest["seeds"] == [0, 1]
    for run_dir, seed in [(d, 0) for d in RUN_DIRS] + [(d, 1) for d in SEED_DIRS]:
        assert load_yaml(repo / run_dir / "config.yaml")["seed"] == seed
    # The seeds trained different fields from the same settings.
    views = [np.asarray(Image.open(repo / d / "final_views.png")) for d in (RUN_DIRS[0], SEED_DIRS[0])]
    assert views[0].shape == views[1].shape and not np.array_equal(views[0], views[1])
    runs = json.loads((repo / "results/smoke/report/runs.json").read_text())["runs"]
    assert sorted((r["method"], r["seed"], r["status"]) for r in runs) == [(m, s, "complete") for m in ("dreamfusion", "hifa") for s in (0, 1)]
    assert (repo / "results/smoke/prompts.txt").read_text() == "a DSLR photo of a corgi\n"
    assert (repo / "results/smoke/benchmarks/train/hifa/a-dslr-photo-of-a-corgi.tsv").is_file()
    assert (repo / "results/smoke/logs/train/hifa/a-dslr-photo-of-a-corgi.log").is_file()
    # MLflow: experiment = suite name, one run per (method, prompt, seed), named after its folder, in results/mlflow.db.
    with sqlite3.connect(repo / "results/mlflow.db") as db:
        names = db.execute("select r.name from runs r join experiments e on r.experiment_id = e.experiment_id where e.name = 'smoke'").fetchall()
        seeds = db.execute("select t.value from tags t join runs r on t.run_uuid = r.run_uuid where t.key = 'seed'").fetchall()
    assert sorted(n for (n,) in names) == ["a-dslr-photo-of-a-corgi"] * 2 + ["a-dslr-photo-of-a-corgi.seed1"] * 2
    assert sorted(v for (v,) in seeds) == ["0", "0", "1", "1"]


def check_dvc_metrics_show_and_push(repo: Path) -> None:
    metrics = json.loads(run([str(BIN / "dvc"), "metrics", "show", "--json"], repo).stdout)
    data = next(v for v in metrics.values())["data"]["results/smoke/metrics.json"]["data"]
    assert data["suite"] == "smoke" and data["runs"]["complete"] == 4 and data["runs"]["seeds"] == 2
    assert set(data["methods"]) == {"hifa", "dreamfusion"}
    assert "Data and pipelines are up to date" in run([str(BIN / "dvc"), "status", "smoke"], repo).stdout
    run([str(BIN / "dvc"), "push"], repo)
    remote = repo.parent / "hifa-dvc-remote"  # the default remote: next to the checkout
    assert remote.is_dir() and any(remote.rglob("*"))


def check_rerun_does_nothing(repo: Path) -> None:
    proc = snakemake(["--configfile", SMOKE, "-n"], repo)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def check_snakemake_report(repo: Path) -> None:
    import zipfile

    snakemake(["--configfile", SMOKE, "--report", "report.zip"], repo)
    names = zipfile.ZipFile(repo / "report.zip").namelist()
    assert any(n.endswith("/index.html") and "/data/raw/" in n for n in names)  # the comparison page, embedded
    for figure in ("qualitative.png", "metrics.png", "training_curves.png", "contact_sheet.png", "preview.png", "final_views.png"):
        assert any(n.endswith("/" + figure) for n in names), figure


def check_deleted_mesh_reruns_only_its_dependents(repo: Path) -> None:
    import shutil

    hifa_run, df_run = (repo / d for d in RUN_DIRS)
    untouched = {p: p.stat().st_mtime_ns for p in (hifa_run / "train_summary.json", hifa_run / "render/render.json", hifa_run / "depth/depth.json")}
    shutil.rmtree(hifa_run / "mesh")
    proc = snakemake(["--configfile", SMOKE, "-n"], repo)
    assert job_counts(proc.stdout) == {"extract_mesh": 1, "evaluate": 1, "report": 1, "all": 1}
    # A training killed before its summary (pre-emption): the re-run resumes from the checkpoint.
    (df_run / "train_summary.json").unlink()
    proc = snakemake(["--configfile", SMOKE], repo, timeout=900)
    assert job_counts(proc.stdout + proc.stderr) == {
        "train": 1, "render": 1, "estimate_depth": 1, "extract_mesh": 2, "evaluate": 2, "report": 1, "all": 1
    }
    assert (hifa_run / "mesh/mesh.ply").is_file()
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    log = (repo / "results/smoke/logs/train/dreamfusion/a-dslr-photo-of-a-corgi.log").read_text()
    assert "workflow: resuming from" in log
    assert json.loads((df_run / "train_summary.json").read_text())["steps"] == 4


@pytest.mark.slow
def test_smoke_suite_end_to_end(tmp_path):
    """`dvc repro smoke` in a fresh checkout runs the smoke suite for real; then: every declared output
    exists, `dvc metrics show` and `dvc push` work, a re-run does nothing, Snakemake's report holds
    the comparison page and figures, and deleting one run's mesh re-runs only what depends on it."""
    repo = copy_pipeline(tmp_path / "repo")
    run([str(BIN / "dvc"), "repro", "smoke"], repo, timeout=1200)
    check_every_declared_output(repo)
    check_dvc_metrics_show_and_push(repo)
    check_rerun_does_nothing(repo)
    check_snakemake_report(repo)
    check_deleted_mesh_reruns_only_its_dependents(repo)
    check_rerun_does_nothing(repo)
