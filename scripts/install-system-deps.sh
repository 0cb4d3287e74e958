#!/usr/bin/env bash
# Debian packages the Python stack needs at run time: libusb for open3d, libgomp for torch/open3d.
# With --test also chromium, which screenshots the suite report (scripts/screenshot-report.sh,
# tests/test_report.py); the demo and the pipeline never need a browser.
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || need+=(libusb-1.0-0)
ldconfig -p 2>/dev/null | grep -q 'libgomp.so.1' || need+=(libgomp1)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: please install ${need[*]} with your system's package manager" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "install-system-deps: installing ${need[*]}"
$sudo apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
  $sudo apt-get update -qq && $sudo apt-get install -y --no-install-recommends "${need[@]}"
}
