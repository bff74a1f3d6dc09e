"""Where the project's data folders (targets/, calibration/) live.

They sit at the repository root (the package is installed in editable mode from it); the
environment variables let a user point at their own copies.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def targets_dir() -> Path:
    return Path(os.environ.get("EDGEPRUNE_TARGETS_DIR", REPO_ROOT / "targets"))


def calibration_dir() -> Path:
    return Path(os.environ.get("EDGEPRUNE_CALIBRATION_DIR", REPO_ROOT / "calibration"))
