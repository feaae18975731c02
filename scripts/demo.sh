#!/usr/bin/env bash
# README command 1: set everything up, assemble the real demo photos, run the pipeline on the
# embedded default (MobileNetV2, real photos, CPU), build the aligned atlases, and print where they are.
#
#   bash scripts/demo.sh [atlas run options]      PYTHON=/path/to/venv/bin/python: use that interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-python3}
SECONDS=0
# The photo packages download (network) while pip installs (disk): both at once.
fetch_log=$(mktemp)
bash scripts/fetch_demo_packages.sh >"$fetch_log" 2>&1 &
fetch_pid=$!
bash scripts/setup.sh demo
setup_s=$SECONDS
wait "$fetch_pid" || true
grep -E "warning|Debian packages in" "$fetch_log" || echo "demo: Debian photo packages unavailable; using the pip-only photo subset"
rm -f "$fetch_log"
$PYTHON -m pipeline.cli demo-data data/demo_photos
photos_s=$((SECONDS - setup_s))
$PYTHON -m pipeline.cli run "$@"
echo "first atlas: $((SECONDS / 60)) min $((SECONDS % 60)) s after start (setup ${setup_s} s, photos ${photos_s} s, pipeline $((SECONDS - setup_s - photos_s)) s)"
# After the main atlas, class atlas and comparison: the aligned atlases of align.pairs (MobileNetV2 vs
# EfficientNet-Lite0, and two layers of MobileNetV2), each a synced side-by-side page (docs/align.md).
SECONDS=0
$PYTHON -m pipeline.cli align -q
echo "align: ${SECONDS} s; open data/atlas/align/<pair>/aligned.html (or atlas serve data/atlas)"
