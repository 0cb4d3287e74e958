# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
# Each installs what it needs first (Debian packages, a venv with the pinned stack).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2
export HF_HUB_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1

.PHONY: install test demo reconstruct clean

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
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15

# Placeholder until the workflow issue lands: the demo suite (Snakemake over the oracle
# world) does not exist yet. This runs the engine's end-to-end check instead.
demo: install
	@echo "make demo: the demo suite (HiFA vs DreamFusion on the oracle world) is not built yet;"
	@echo "make demo: running the engine check 'hifa reconstruct' on one catalogue scene instead."
	$(VENV)/bin/hifa reconstruct --scene red-ball-on-blue-box --out results/reconstruct
	@echo "make demo: results in results/reconstruct/red-ball-on-blue-box (metrics.json, comparison.png, mesh.glb)"

# The engine acceptance run: every catalogue scene, figures into benchmarks/results/.
reconstruct: install
	$(PY) benchmarks/reconstruct.py --out benchmarks/results

clean:
	rm -rf results .pytest_cache
