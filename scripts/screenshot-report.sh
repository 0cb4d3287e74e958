#!/usr/bin/env bash
# Screenshot a report page with headless Chromium: screenshot-report.sh PAGE.html OUT.png [WIDTH,HEIGHT]
# Writes OUT.png atomically; a throw-away profile keeps parallel runs apart.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 PAGE.html OUT.png [WIDTH,HEIGHT (default 1400,2400)]" >&2
  exit 2
fi
page=$1 out=$2 size=${3:-1400,2400}
[ -f "$page" ] || { echo "screenshot-report: no such page: $page" >&2; exit 2; }
browser=""
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then browser=$name; break; fi
done
[ -n "$browser" ] || { echo "screenshot-report: chromium not found; run scripts/install-system-deps.sh" >&2; exit 1; }
url="file://$(cd "$(dirname "$page")" && pwd)/$(basename "$page")"
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tmp="$work/shot.png"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
  --no-default-browser-check --disable-dev-shm-usage --user-data-dir="$work/profile" \
  --virtual-time-budget=5000 --window-size="$size" --screenshot="$tmp" "$url" >"$work/log" 2>&1 || {
  echo "screenshot-report: $browser failed:" >&2; tail -5 "$work/log" >&2; exit 1; }
[ -s "$tmp" ] || { echo "screenshot-report: $browser wrote no image" >&2; tail -5 "$work/log" >&2; exit 1; }
mv -f "$tmp" "$out.tmp.$$" && mv -f "$out.tmp.$$" "$out"
echo "$out"
