# Per suite: the manifest (suite.json + prompts.txt), the tiny-world models a smoke suite trains
# with, and the report (comparison page, Markdown, curves, paper tables and figures, metrics.json).


def write_atomic(path, text):
    """A unique temporary beside `path`, fsync, rename (stdlib only: under --use-conda the driver's Python
    may lack hifa's dependencies); the umask's mode, as hifa.io gives."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    mask = os.umask(0o022)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


rule suite_manifest:
    """results/<suite>/suite.json ({suite, methods, prompts: {slug: prompt}, seeds, world, description}: the
    slug mapping and the seeds the report reads)."""
    output:
        manifest=RESULTS + "/{suite}/suite.json",
    params:
        manifest=lambda wc: {
            "suite": wc.suite,
            "methods": suite_of(wc)["methods"],
            "prompts": suite_of(wc)["prompts"],
            "seeds": suite_of(wc)["seeds"],
            "world": suite_of(wc)["world"],
            "description": suite_of(wc).get("description"),
        },
    run:
        write_atomic(output.manifest, json.dumps(params.manifest, indent=2) + "\n")


rule suite_prompts:
    """results/<suite>/prompts.txt, one prompt per line, for `hifa evaluate --prompts` (R-precision's
    caption set). Its own rule: a new description or method must not re-run every evaluation."""
    output:
        prompts=RESULTS + "/{suite}/prompts.txt",
    params:
        prompts=lambda wc: list(suite_of(wc)["prompts"].values()),
    run:
        write_atomic(output.prompts, "".join(p + "\n" for p in params.prompts))


rule report:
    """`hifa report`: everything a reader of the suite needs, from the run folders alone."""
    input:
        manifest=RESULTS + "/{suite}/suite.json",
        summaries=suite_inputs("train_summary.json"),
        metrics=suite_inputs("eval/metrics.json"),
    output:
        metrics=RESULTS + "/{suite}/metrics.json",
        report=report(
            directory(RESULTS + "/{suite}/report"),
            htmlindex="index.html",
            caption="../report/comparison.rst",
            category="Comparison",
            labels={"suite": "{suite}", "page": "comparison (HTML)"},
        ),
        paper=report(
            directory(RESULTS + "/{suite}/paper"),
            patterns=["{name}.png"],
            caption="../report/paper.rst",
            category="Paper figures",
            labels={"suite": "{suite}", "figure": "{name}"},
        ),
    log:
        LOGS + "/report.log",
    params:
        suite=RESULTS + "/{suite}",
        options=lambda wc: option_args(suite_of(wc)["report"], {"views": "--views"}),
    threads: threads_of("report")
    resources:
        gpu=resource("report", "gpu"),
        mem_mb=resource("report", "mem_mb"),
        runtime=resource("report", "runtime"),
        cpus_per_task=resource("report", "cpus"),
    conda:
        "../envs/hifa.yaml"
    shell:
        PRELUDE + "{HIFA} report {params.suite:q} {params.options}"


# A tiny-world suite trains with tiny random Stable Diffusion and DPT checkpoints (tests/tinyworld.py)
# saved in the real layout; the suite config names their folders. One rule per such suite.
for _name, _suite in SUITES.items():
    if not _suite.get("tiny_world"):
        continue

    rule:
        name:
            f"tiny_world_{_name}"
        output:
            sd=directory(_suite["tiny_world"]["sd"]),
            dpt=directory(_suite["tiny_world"]["dpt"]),
        log:
            f"{RESULTS}/{_name}/logs/tiny_world.log",
        conda:
            "../envs/hifa.yaml"
        shell:
            "PYTHONPATH={BASEDIR}${{PYTHONPATH:+:$PYTHONPATH}} {PYTHON} -c "
            + shlex.quote(
                "import sys; from pathlib import Path; from tests.tinyworld import build_tiny_dpt, build_tiny_stable_diffusion; "
                "build_tiny_stable_diffusion(Path(sys.argv[1])); build_tiny_dpt(Path(sys.argv[2]))"
            )
            + " {output.sd:q} {output.dpt:q} > {log:q} 2>&1"
