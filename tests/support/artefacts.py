"""Where tests leave files for people to look at (screenshots): ``$OPTIBASE_ARTEFACTS``.

Defaults to ``artefacts/`` at the repository root, which git ignores.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def artefact_path(name: str) -> Path:
    """The path for the artefact *name*, its directory created if need be."""
    directory = Path(os.environ.get("OPTIBASE_ARTEFACTS", ROOT / "artefacts"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name
