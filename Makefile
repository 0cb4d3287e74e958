# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
# Each installs what it needs first (Debian packages, a venv with the pinned stack).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1

.PHONY: install test demo smoke paper reconstruct bench clean

# The tests, the demo and the smoke suite need no downloads: no hub at all. `make paper` may download
# the models on first use (a cached model loads without the network either way).
test demo smoke reconstruct bench: export HF_HUB_OFFLINE ?= 1

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools<82' wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip check
	touch $@

test: install
	scripts/install-system-deps.sh --test
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15

# The demo suite: HiFA vs DreamFusion (and HiFA without annealing) on three oracle-world scenes,
# scored against ground truth, on the CPU and offline; then Snakemake's own report of the run.
SNAKEMAKE := PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/snakemake
DEMO := config/suites/demo.yaml
demo: install
	@start=$$(date +%s); \
	$(SNAKEMAKE) --configfile $(DEMO) || { echo "make demo: some jobs failed: see results/demo/logs/ and the FAILED files in results/demo/runs/; \
	'$(VENV)/bin/hifa report results/demo' reports the finished runs" >&2; exit 1; }; \
	$(SNAKEMAKE) --configfile $(DEMO) --report results/demo/snakemake-report.zip --quiet all && \
	echo "make demo: finished in $$(( $$(date +%s) - start )) s (after installation)" && \
	echo "make demo: comparison report: $(CURDIR)/results/demo/report/index.html (Markdown: results/demo/report/report.md)" && \
	echo "make demo: paper tables and figures: results/demo/paper/; Snakemake report: results/demo/snakemake-report.zip" && \
	echo "make demo: browse the MLflow runs: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/results/mlflow.db"

# The tiny-world smoke suite (random models, a few steps): the whole pipeline in about a minute.
smoke: install
	$(SNAKEMAKE) --configfile config/suites/smoke.yaml

# The paper suites (config/config.yaml: real Stable Diffusion, GPU). On a cluster:
#   .venv/bin/snakemake --profile profiles/slurm
paper: install
	$(SNAKEMAKE)

# Speed benchmarks (not part of `make test`): CUDA when present (full-size SD 2.1-base architecture,
# random weights), else CI-sized CPU figures. Writes benchmarks/results/bench-<device>.{json,md}.
bench: install
	$(PY) benchmarks/bench.py --out benchmarks/results

# The engine acceptance run: every catalogue scene, figures into benchmarks/results/.
reconstruct: install
	$(PY) benchmarks/reconstruct.py --out benchmarks/results

# What `make demo`, `make smoke` and the tests write; the paper suites' results (GPU days), the MLflow
# store and any other suite under results/ stay: delete those by hand.
clean:
	rm -rf results/demo results/smoke results/tiny-world .pytest_cache
