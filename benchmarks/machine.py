"""Where the numbers were taken: the machine, the interpreter, the peers, the code."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import REPO

# Distributions whose versions can move the figures: ours, the server stack, the peers.
PACKAGES = (
    "optibase-edge",
    "starlette",
    "uvicorn",
    "httpx2",
    "h11",
    "anyio",
    "itsdangerous",
    "cachetools",
    "growthbook",
    "segment-analytics-python",
    "requests",
    "fastapi",
    "uvloop",
    "httptools",
)


def machine_info() -> dict[str, Any]:
    """CPU, Python, package versions, wrk, git commit and library file hashes.

    JSON-ready. A fact that cannot be found (no wrk, no git, a package not
    installed) is None, and an unknown CPU model "unknown", rather than an error.
    """
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    wrk = shutil.which("wrk")
    wrk_version = None
    if wrk:
        with contextlib.suppress(Exception):
            out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=5)
            wrk_version = (out.stdout or out.stderr).splitlines()[0].strip()
    commit = None
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    dirty = None
    with contextlib.suppress(Exception):
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "optibase_edge"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.splitlines()
    # The commit alone does not say what ran when the library had uncommitted edits.
    library_files = {
        str(p.relative_to(REPO)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted((REPO / "optibase_edge").rglob("*.py"))
    }
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": packages,
        "wrk": wrk_version,
        "git_commit": commit,
        "library_uncommitted_changes": dirty,
        "library_file_sha256_16": library_files,
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
