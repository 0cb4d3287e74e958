#!/usr/bin/env bash
# Here (a machine with pip's index): download benchmarks/gpu/wheels.txt as Python 3.12 wheels into .whl/,
# which the device run carries (run(..., carry=[".whl"])). The device has no package index.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
grep -v '^#' benchmarks/gpu/wheels.txt | grep . | while read -r spec; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$spec"
done
ls -l .whl
