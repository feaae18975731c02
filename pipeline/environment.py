"""Is this Python the one the project was installed into? One line instead of a deep traceback.

``dvc repro`` runs every stage as ``python3 -m pipeline.cli ...`` (dvc.yaml), and ``python3`` is
whichever comes first on ``PATH``: when DVC itself was started from a virtualenv, conda env or
module-loaded Python that is not *activated*, that is another interpreter, without the project's
packages, and the stage would die with ``ModuleNotFoundError`` from somewhere inside a library.
The CLI checks first (standard library only, no import of the packages themselves) and says what to
do. docs/dvc.md explains it for DVC users.
"""

from __future__ import annotations

import importlib.util
import sys

#: import name -> distribution name, for every runtime dependency in pyproject.toml
#: (tests/test_environment.py keeps the two lists equal)
REQUIRED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "umap": "umap-learn",
    "sklearn": "scikit-learn",
    "faiss": "faiss-cpu",
    "zarr": "zarr",
    "google_crc32c": "google-crc32c",
    "dask": "dask",
    "distributed": "dask[distributed]",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "pydantic": "pydantic",
    "tqdm": "tqdm",
    "filelock": "filelock",
    "matplotlib": "matplotlib",
    "scipy": "scipy",
}


def missing_packages(required: dict[str, str] = REQUIRED) -> list[str]:
    """The distributions of ``required`` that this interpreter cannot import (found, not imported)."""
    missing = []
    for module, distribution in required.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(distribution)
    return missing


def interpreter_problem(required: dict[str, str] = REQUIRED) -> str | None:
    """One line saying that this Python lacks the project's packages and what to do, or None."""
    missing = missing_packages(required)
    if not missing:
        return None
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    return (
        f"atlas: this Python ({sys.executable}) lacks the project's packages ({shown}); run the "
        "interpreter the project was installed into: activate its environment (e.g. `source "
        ".venv/bin/activate`) or call `<env>/bin/python -m pipeline.cli ...`; `dvc repro` runs each "
        "stage with the `python3` first on PATH, so activate the environment first (docs/dvc.md)"
    )
