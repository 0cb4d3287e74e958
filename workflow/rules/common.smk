# Config loading, validation and the (suite, method, prompt-slug, seed) bookkeeping. No pipeline logic:
# every step is a `hifa` command (workflow/rules/*.smk); this file only wires them.

import copy
import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

SCHEMA = "workflow/schemas/config.schema.yaml"
SLUG_MAX = 60
PERIODIC_TAIL = re.compile(r"(.+)\1{19,}$")  # Snakemake's PeriodicityDetector: a unit and 19+ repeats


def slugify(text):
    """hifa.scenes.slugify (kept import-free here: the driver need not load open3d), capped at SLUG_MAX
    characters on a dash boundary. tests/test_workflow.py checks the two agree below the cap.

    A slug whose tail is one unit repeated 20 times or more ('xxxx...', 'ha-ha-ha-...') gets '-' and
    8 hex digits of the prompt's SHA-256: Snakemake takes such a wildcard for runaway recursion and
    stops the whole workflow (PeriodicWildcardError). The hash tail cannot itself be periodic."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "scene"
    if len(slug) > SLUG_MAX:
        cut = slug[: SLUG_MAX + 1]
        slug = cut[: cut.rfind("-")] if "-" in cut[1:] else cut[:SLUG_MAX]
    slug = slug.strip("-")
    if PERIODIC_TAIL.search(slug):
        slug = f"{slug}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return slug


def run_name(slug, seed=0):
    """hifa.run_names.run_name (import-free copy): the slug for seed 0, '<slug>.seed<N>' otherwise."""
    return slug if seed == 0 else f"{slug}.seed{seed}"


def split_run_name(name):
    """(slug, seed) of a run folder name made by run_name."""
    slug, _, seed = name.partition(".seed")
    return slug, int(seed or 0)


def _files():
    return ", ".join(str(f) for f in workflow.configfiles) or "--config"


def _where(path):
    return ".".join(str(p) for p in path) or "(top level)"


def validate_config(config):
    """snakemake.utils.validate (which also fills in the schema's defaults), re-raised as one clear line."""
    from snakemake.utils import validate
    import jsonschema

    try:
        validate(config, "../schemas/config.schema.yaml")
    except WorkflowError as exc:
        cause = exc.__cause__ or exc.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        err = jsonschema.exceptions.best_match([cause] + list(cause.context or []))
        raise WorkflowError(f"invalid config ({_files()}) at {_where(err.absolute_path)}: {err.message} (schema: {SCHEMA})") from None


def normalise_prompts(suite_name, entries):
    """[prompt | {prompt, slug}] -> {slug: prompt}; slugs are unique and filesystem-safe."""
    prompts = {}
    for i, entry in enumerate(entries):
        prompt, slug = (entry, None) if isinstance(entry, str) else (entry["prompt"], entry.get("slug"))
        prompt = " ".join(prompt.split())
        slug = slug or slugify(prompt)
        if slug in prompts:
            raise WorkflowError(
                f"invalid config ({_files()}) at suites.{suite_name}.prompts.{i}: prompt {prompt!r} has the slug {slug!r} of "
                f"{prompts[slug]!r}; give one of them an explicit slug ({{prompt: ..., slug: ...}})"
            )
        prompts[slug] = prompt
    return prompts


def load_suites(config):
    """Validated config -> {suite: plain dict with 'prompts' as {slug: prompt}}."""
    validate_config(config)
    suites = {}
    for name, raw in config["suites"].items():
        suite = copy.deepcopy(raw)
        suite["name"] = name
        suite["prompts"] = normalise_prompts(name, raw["prompts"])
        kind = suite["prior"].split(":", 1)[0]
        suite["world"] = "oracle" if kind == "oracle" else ("tiny" if suite.get("tiny_world") else "real")
        for i, seed in enumerate(raw["seeds"]):  # JSON Schema counts 1.0 as an integer; a folder name must not
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise WorkflowError(f"invalid config ({_files()}) at suites.{name}.seeds.{i}: {seed!r} is not an integer")
        for method in raw["train"]["methods"]:
            if method not in raw["methods"]:
                raise WorkflowError(f"invalid config ({_files()}) at suites.{name}.train.methods.{method}: {method!r} is not one of the "
                                    f"suite's methods {raw['methods']}")
        for where, sets in [("train.set", raw["train"]["set"])] + [
            (f"train.methods.{m}.set", (entry or {}).get("set") or {}) for m, entry in raw["train"]["methods"].items()
        ]:
            if "seed" in sets:
                raise WorkflowError(f"invalid config ({_files()}) at suites.{name}.{where}: set the seeds with suites.{name}.seeds (a list), "
                                    "not train.set.seed")
        suites[name] = suite
    return suites


SUITES = load_suites(config)
RESULTS = config["results"].rstrip("/")  # after validation (defaults filled in)
RUN = RESULTS + "/{suite}/runs/{method}/{slug}"
LOGS = RESULTS + "/{suite}/logs"
BENCH = RESULTS + "/{suite}/benchmarks"

# Wildcards never match across folders or outside the configured names.
wildcard_constraints:
    suite="|".join(re.escape(s) for s in SUITES),
    method="[a-z0-9]+(-[a-z0-9]+)*",
    slug=r"[a-z0-9]+(-[a-z0-9]+)*(\.seed[1-9][0-9]*)?",  # a run folder: the prompt's slug, .seed<N> for a seed other than 0


def uses_conda():
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    return DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method


def hifa_command():
    """The `hifa` command: config `hifa`; under --use-conda the checkout's code on the env's Python
    (workflow/envs/hifa.yaml holds the dependencies only); else the `hifa` next to Snakemake's Python
    (the project venv), else `hifa` on PATH."""
    if config.get("hifa"):
        return config["hifa"]
    if uses_conda():
        return f"env PYTHONPATH={shlex.quote(workflow.basedir)} python -m hifa.cli"
    local = Path(sys.executable).parent / "hifa"
    return shlex.quote(str(local)) if local.is_file() else "hifa"


HIFA = hifa_command()
PYTHON = "python" if uses_conda() else shlex.quote(sys.executable)
BASEDIR = shlex.quote(workflow.basedir)


def suite_of(wildcards):
    return SUITES[wildcards.suite]


def run_path(suite, method, slug):
    return f"{RESULTS}/{suite}/runs/{method}/{slug}"


def run_dir(wildcards):
    return run_path(wildcards.suite, wildcards.method, wildcards.slug)


def step_resources(suite, step, method=None):
    """Resources of a step: the suite's `resources.<step>`, then the method's `train.methods.<m>.resources`."""
    res = dict(suite["resources"][step])
    if method and step == "train":
        res.update((suite["train"]["methods"].get(method) or {}).get("resources") or {})
    return res


def resource(step, key):
    """A rule resource as a function of the wildcards (rules are shared by every suite)."""

    def get(wildcards):
        value = step_resources(suite_of(wildcards), step, getattr(wildcards, "method", None))[key]
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    return get


def threads_of(step):
    return resource(step, "cpus")


def yaml_scalar(value):
    """A config value as the text `hifa train --set key=VALUE` parses back (YAML)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def train_sets(suite, method):
    """The `--set KEY=VALUE` overrides of a method's trainings: the suite's, then the method's own."""
    sets = dict(suite["train"]["set"])
    sets.update((suite["train"]["methods"].get(method) or {}).get("set") or {})
    sets.setdefault("tracking.experiment", suite["name"])
    return [f"{key}={yaml_scalar(value)}" for key, value in sets.items()]


def prompt_of(wildcards):
    """The prompt of a run folder (its slug without the seed suffix)."""
    return suite_of(wildcards)["prompts"][split_run_name(wildcards.slug)[0]]


def train_args(wildcards):
    """Everything `hifa train` gets except --out/--resume, shell-quoted. The prompt itself is passed as a
    separate quoted param ({params.prompt:q}), never spliced into the command text unquoted."""
    suite = suite_of(wildcards)
    args = ["--method", wildcards.method, "--prior", suite["prior"]]
    if suite["prior"] == "oracle":
        args += ["--budget", suite["budget"]]
    seed = split_run_name(wildcards.slug)[1]
    # Seed 0 is the presets' own: no --set, so the params (a Snakemake re-run trigger) of single-seed suites stay as they were.
    for override in train_sets(suite, wildcards.method) + ([f"seed={seed}"] if seed else []):
        args += ["--set", override]
    if not suite["train"]["tracking"]:
        args.append("--no-mlflow")
    return " ".join(shlex.quote(a) for a in args)


def option_args(options, names):
    """--flag value for each configured (non-null) option, shell-quoted."""
    args = []
    for key, flag in names.items():
        value = options.get(key)
        if value is not None:
            args += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    return " ".join(shlex.quote(a) for a in args)


def mlflow_db():
    """The MLflow store the pipeline writes: config `mlflow_db`, else $HIFA_MLFLOW_DB, else <results>/mlflow.db."""
    configured = config.get("mlflow_db") or os.environ.get("HIFA_MLFLOW_DB")
    if configured:
        return configured
    return str(Path(RESULTS, "mlflow.db").resolve())


def compile_cache():
    """torch.compile's cache for the jobs: config `compile_cache`, else $TORCHINDUCTOR_CACHE_DIR, else <results>/.compile-cache."""
    configured = config.get("compile_cache") or os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return str(Path(configured or Path(RESULTS, ".compile-cache")).resolve())


def tiny_world_inputs(wildcards):
    """The tiny random model folders a tiny-world suite trains with (built by rule tiny_world)."""
    tiny = suite_of(wildcards).get("tiny_world")
    return {"sd": tiny["sd"], "dpt": tiny["dpt"]} if tiny else {}


def runs_of(suite):
    """(method, run folder name) of every run: methods x prompts x seeds."""
    return [(m, run_name(s, seed)) for m in suite["methods"] for s in suite["prompts"] for seed in suite["seeds"]]


def suite_inputs(marker):
    """One file per run of the wildcard's suite, e.g. eval/metrics.json."""

    def get(wildcards):
        return [f"{run_path(wildcards.suite, m, s)}/{marker}" for m, s in runs_of(suite_of(wildcards))]

    return get


# Every file a run folder delivers (the declared outputs of rules train ... evaluate). They are all
# targets of rule all, not intermediates: Snakemake does not re-create a missing intermediate file
# whose consumers are up to date, but it does re-create a missing target, and then re-runs exactly
# the jobs downstream of it (delete R/mesh/ and only extract_mesh, evaluate and report run).
RUN_FILES = (
    "train_summary.json", "weights.pt", "final_views.png",
    "render/render.json", "render/depth.npz", "render/contact_sheet.png",
    "depth/depth.json", "depth/estimated.npz", "depth/comparison.png",
    "mesh/mesh.json", "mesh/mesh.ply", "mesh/mesh.obj", "mesh/mesh.glb", "mesh/preview.png",
    "mesh/textured.glb", "mesh/textured.obj", "mesh/textured.mtl", "mesh/textured.png",
    "eval/metrics.json",
)


def suite_targets(name):
    """Everything a suite delivers: each run folder's files, the report, the paper files, metrics.json."""
    runs = [f"{run_path(name, m, s)}/{f}" for m, s in runs_of(SUITES[name]) for f in RUN_FILES]
    suite = [f"{RESULTS}/{name}/{f}" for f in ("metrics.json", "report", "paper", "suite.json", "prompts.txt")]
    return runs + suite  # targets all: deleting one re-creates it (an intermediate would stay missing)


def fail_marker(folder):
    """Shell snippet for a failed step: leave the log's last line in FOLDER/FAILED (the report shows it)."""
    return f'{{ mkdir -p {folder} && tail -n 1 {{log:q}} > {folder}/FAILED; exit 1; }}'


def check_suites():
    """`hifa check-suites` once, in the main process: a `train.set` key, value or oracle prompt that every
    train job would fail on stops the workflow now, in one line. Under --use-conda it runs on the driver's
    Python; where that lacks hifa's stack the jobs check for themselves, as before."""
    import subprocess

    payload = [
        {"suite": name, "prior": suite["prior"], "budget": suite.get("budget"), "prompts": suite["prompts"],
         "methods": {m: train_sets(suite, m) for m in suite["methods"]}}
        for name, suite in SUITES.items()
    ]
    command = HIFA
    if uses_conda() and not config.get("hifa"):  # the jobs' env may not exist yet: the driver's own Python, if it has hifa's stack
        local = Path(sys.executable).parent / "hifa"
        command = shlex.quote(str(local)) if local.is_file() else f"env PYTHONPATH={BASEDIR} {shlex.quote(sys.executable)} -m hifa.cli"
    proc = subprocess.run(f"{command} check-suites -", shell=True, input=json.dumps(payload), capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    if proc.returncode == 2 and lines and lines[-1].startswith("hifa: error: "):
        raise WorkflowError(f"invalid config ({_files()}): {lines[-1].removeprefix('hifa: error: ')}")
    if proc.returncode != 0:
        print(f"workflow: could not check the suites up front ({(lines or ['exit status ' + str(proc.returncode)])[-1]}); "
              "each job checks its own settings", file=sys.stderr)


if workflow.is_main_process and config["check_suites"]:
    check_suites()
