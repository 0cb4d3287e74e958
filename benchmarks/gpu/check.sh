#!/usr/bin/env bash
# On the device (GPU machine): install the carried wheels, run the CUDA tests, then the benchmark, all
# output under $OUT (what comes back). Usage: bash benchmarks/gpu/check.sh [bench.py arguments]
#   env TESTS (default tests/cuda; empty: none), TEST_TIMEOUT (s, default 240), BENCH_TIMEOUT (s, default 420)
# e.g. run(command="bash benchmarks/gpu/check.sh --deadline 300", carry=[".whl"], timeout_s=560)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, diffusers, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
status=0
TESTS=${TESTS-tests/cuda}
if [ -n "$TESTS" ]; then
    # -v: each result is printed as it ends, so a run cut short by the timeout still says which tests passed
    timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -v --durations=0 -p no:cacheprovider $TESTS 2>&1 | tee "$OUT/tests.log"
    status=${PIPESTATUS[0]}
fi
timeout "${BENCH_TIMEOUT:-420}" python3 benchmarks/bench.py --out "$OUT/bench" "$@" 2>&1 | tee "$OUT/bench.log"
bench=${PIPESTATUS[0]}
echo "check.sh: tests exit $status, bench exit $bench"
[ "$status" -eq 0 ] && [ "$bench" -eq 0 ]
