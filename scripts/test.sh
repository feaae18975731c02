#!/usr/bin/env bash
# README command 2: set everything up and run the whole test suite (CPU, real weights, real photos).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m pytest -q -p no:cacheprovider "$@"
