# hifa-pipeline: text-to-3D suites (HiFA, DreamFusion, ablations) end to end.
#
#   snakemake                                           # config/config.yaml: the paper suites (GPU, real models)
#   snakemake --configfile config/suites/demo.yaml      # oracle world, 2 CPU cores (what `make demo` runs)
#   snakemake --configfile config/suites/smoke.yaml     # tiny world, a few steps (tests)
#   snakemake --profile profiles/slurm ...              # on a SLURM cluster
#   snakemake --configfile ... --report report.zip      # Snakemake's own report (comparison page, figures)
#
# profiles/default/config.yaml is picked up without a flag (cores, rerun-incomplete, ...).
# The DAG per (suite, method, prompt): train -> render -> estimate_depth; train -> extract_mesh;
# evaluate; then per suite: report (page, Markdown, curves, paper tables and figures, metrics.json).
# Every rule calls the `hifa` CLI; this file and workflow/rules/ only wire them.

import os

from snakemake.utils import min_version

min_version("9.0")

# A --configfile replaces the default suites instead of being merged into them (one with `suites: {}`
# is an error, not the default suites).
if "suites" not in config:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/runs.smk"
include: "workflow/rules/suite.smk"


localrules:
    all,
    suite_manifest,
    suite_prompts,


rule all:
    """Every configured suite: all runs, then each suite's report."""
    input:
        [target for name in SUITES for target in suite_targets(name)],
    default_target: True
