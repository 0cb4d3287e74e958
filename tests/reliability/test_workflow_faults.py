"""Issue 8 through the Snakemake workflow: a killed train job resumes from its checkpoint
(--rerun-incomplete, the default profile), a second `snakemake` on the same folder refuses while the
first runs (Snakemake's lock), and hostile prompts are quoted, never executed, and get unique safe slugs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.reliability.helpers import TINY, assert_outputs_complete, load_state
from tests.workflow_helpers import BIN, copy_pipeline, dry_run_jobs, snakemake, tool_env

pytestmark = pytest.mark.slow

GOOD = "a green torus"
# Shell metacharacters the train rule's command line must carry as plain text; each would create a
# file named PWNED* in the working folder (or /tmp) if the shell ever interpreted it.
SHELL_PROMPTS = [
    "$(touch PWNED1)",
    "`touch PWNED2`",
    "a torus\"; touch PWNED3; echo \"",
    "a torus'; touch PWNED4; echo '",
    "a torus && touch /tmp/PWNED5-$$ | tee PWNED6 > PWNED7",
]
OTHER_PROMPTS = [
    "../../../etc/passwd",
    "/absolute/path/prompt",
    "a café on the Champs-Élysées, 東京 at night",
    "a corgi 🐕 on a skateboard 🛹",
    "a line\nbreak\tand tab",
    " ".join(f"detail{i}" for i in range(2000))[:10_000],  # 10,000 characters
]
ITERATIONS = 24
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def suite_config(prompts: list[str], cache: Path) -> dict:
    overrides = dict(item.split("=", 1) for item in TINY)
    overrides["prior.oracle.cache_dir"] = str(cache)
    overrides["iterations"] = str(ITERATIONS)  # still training when the first checkpoint (step 3) appears
    return {
        "results": "results",
        "check_suites": False,  # the train jobs themselves must refuse these prompts, with every shell character inert
        "suites": {
            "rel": {
                "description": "reliability: tiny oracle runs",
                "prior": "oracle",
                "methods": ["hifa"],
                "prompts": prompts,
                "train": {"set": {k: yaml.safe_load(v) for k, v in overrides.items()}, "tracking": False},
                "resources": {step: {"cpus": 1, "mem_mb": 1000, "runtime": 10} for step in ("train", "render", "depth", "mesh", "evaluate", "report")},
            }
        },
    }


def pwned(repo: Path) -> list[Path]:
    return [p for p in (*repo.rglob("PWNED*"), *Path("/tmp").glob("PWNED*")) if p.exists()]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = copy_pipeline(tmp_path_factory.mktemp("wf") / "repo")
    config = suite_config([GOOD, *SHELL_PROMPTS, *OTHER_PROMPTS], root / "cache")
    (root / "rel.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    return root


def summary_target(slug: str) -> str:
    return f"results/rel/runs/hifa/{slug}/train_summary.json"


def test_hostile_prompts_get_unique_safe_slugs_and_quoted_commands(repo):
    proc = snakemake(["--configfile", "rel.yaml", "-n", "-p", "--cores", "1"], repo, timeout=300)
    output = proc.stdout + proc.stderr
    trains = [job for job in dry_run_jobs(output) if job["rule"] == "train"]
    slugs = [dict(p.split("=", 1) for p in job["wildcards"].split(", "))["slug"] for job in trains]
    assert len(slugs) == len(set(slugs)) == 1 + len(SHELL_PROMPTS) + len(OTHER_PROMPTS)
    assert all(SLUG.fullmatch(s) and len(s) <= 60 for s in slugs), slugs
    for prompt in SHELL_PROMPTS:  # each reaches `hifa train` as one single-quoted word
        import shlex

        assert f"--prompt {shlex.quote(prompt)} " in output, prompt
    assert not pwned(repo)


def test_two_prompts_with_one_slug_are_refused(repo, tmp_path):
    config = suite_config(["a corgi 🐕", "a corgi 🐈"], repo / "cache")
    path = tmp_path / "clash.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    proc = snakemake(["--configfile", str(path), "-n"], repo, check=False, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output
    assert "has the slug 'a-corgi' of 'a corgi 🐕'; give one of them an explicit slug" in output, output[-2000:]


PERIODIC_PROMPTS = ["x" * 10_000, "ha" * 40, "ab" * 25, "ha " * 40, "la " * 5 + "land"]


def test_repetitive_prompts_get_hashed_slugs_and_do_not_stop_the_workflow(repo, tmp_path):
    """Snakemake stops the whole workflow on a wildcard ending in a unit repeated 20 times
    (PeriodicWildcardError): such slugs carry 8 hex digits of the prompt's hash, and stay unique."""
    config = suite_config([GOOD, *PERIODIC_PROMPTS], repo / "cache")
    path = tmp_path / "periodic.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(["--configfile", str(path), "-n"], repo, check=False, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "PeriodicWildcardError" not in output, output[-2000:]
    trains = [job for job in dry_run_jobs(output) if job["rule"] == "train"]
    slugs = {dict(p.split("=", 1) for p in job["wildcards"].split(", "))["slug"] for job in trains}
    assert len(slugs) == 1 + len(PERIODIC_PROMPTS) and GOOD.replace(" ", "-") in slugs
    # The capped 'ha ha ...' is 'ha' + '-ha' x 19 and 'la la ... land' ends in 'land': neither is periodic.
    hashed = slugs - {GOOD.replace(" ", "-"), "ha" + "-ha" * 19, "la-la-la-la-la-land"}
    assert len(hashed) == 3, slugs
    for slug in hashed:
        assert SLUG.fullmatch(slug) and len(slug) <= 69 and re.search(r"-[0-9a-f]{8}$", slug), slug
    assert {slug[:-9] for slug in hashed} == {"x" * 60, "ha" * 30, "ab" * 25}


def test_killed_train_job_resumes_and_a_second_snakemake_is_refused(repo):
    good = summary_target("a-green-torus")
    hostile = [summary_target(s) for s in ("touch-pwned1", "touch-pwned2")]
    env = tool_env()
    first = subprocess.Popen(
        ["nice", "-n", "5", str(BIN / "snakemake"), "--configfile", "rel.yaml", "--cores", "1", good],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    run = repo / "results/rel/runs/hifa/a-green-torus"
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoint.pt").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, first.communicate()[0][-3000:]
        # Freeze the first run mid-training (no race with a busy machine), then a second snakemake on the
        # same folder and target must refuse while the first one holds the lock.
        os.killpg(first.pid, signal.SIGSTOP)
        second = snakemake(["--configfile", "rel.yaml", "--cores", "1", good], repo, check=False, timeout=300)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stdout + second.stderr
        assert first.poll() is None, "the first run is still there"
    finally:  # the node dies: snakemake, the job's shell and hifa train, all at once
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    killed_at = load_state(run)["step"]
    assert 3 <= killed_at < ITERATIONS and not (run / "train_summary.json").exists()
    assert_outputs_complete(run)
    print(f"snakemake killed (SIGKILL to its process group) with the checkpoint at step {killed_at} of {ITERATIONS}")
    # The stale lock is reported clearly, and --unlock clears it.
    proc = snakemake(["--configfile", "rel.yaml", "--cores", "1", good], repo, check=False, timeout=300)
    assert proc.returncode != 0 and "Directory cannot be locked" in proc.stdout + proc.stderr
    snakemake(["--configfile", "rel.yaml", "--unlock"], repo, timeout=300)
    # Re-run (the default profile sets rerun-incomplete and keep-going): the killed job resumes from its
    # checkpoint; the hostile prompts' jobs run their real command and fail with one line each.
    proc = snakemake(["--configfile", "rel.yaml", "--cores", "1", good, *hostile], repo, check=False, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0  # the hostile prompts are not oracle scenes
    log = (repo / "results/rel/logs/train/hifa/a-green-torus.log").read_text()
    assert "workflow: resuming from" in log, log[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == ITERATIONS
    rows = load_state(run)["log_rows"]
    assert [r["step"] for r in rows] == list(range(1, ITERATIONS + 1)), "no step lost or repeated by the kill"
    assert_outputs_complete(run)
    for slug in ("touch-pwned1", "touch-pwned2"):
        failed = (repo / f"results/rel/runs/hifa/{slug}/FAILED").read_text().strip()
        assert failed.startswith("hifa: error: the oracle prior has no scene for the prompt '"), failed
        assert not (repo / f"results/rel/runs/hifa/{slug}/config.yaml").exists(), "rejected before writing anything"
    assert not pwned(repo), output[-3000:]
    again = snakemake(["--configfile", "rel.yaml", "--cores", "1", "-n", good], repo, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr
