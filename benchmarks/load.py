"""Bounded HTTP load against a loopback URL, always from wrk, installed when missing.

A load generator written in Python saturates before a Python server does, so
its requests/s would say how fast the generator is, not the server: there is
no fallback. Every run is bounded in time (wrk's ``-d``, and a subprocess
timeout) and each request times out after 5 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

from .wrk import HeaderPool, LoadResult, run_wrk

WRK_PACKAGE = "wrk"  # the Debian package that has the wrk binary
APT_TIMEOUT_S = 600.0


class WrkMissing(RuntimeError):
    """wrk is not installed and could not be installed."""


def ensure_wrk() -> str:
    """The path of wrk; installed with apt-get first (sudo when not root) if it is missing.

    Raises :class:`WrkMissing`, saying why, when it still cannot be had.
    """
    found = shutil.which("wrk")
    if found:
        return found
    why = _apt_install(WRK_PACKAGE) or "it installed, yet no wrk is on PATH"
    found = shutil.which("wrk")
    if found:
        return found
    raise WrkMissing(
        "wrk is required for the HTTP load (a Python load generator saturates before the "
        f"server does); installing the Debian package {WRK_PACKAGE!r} failed: {why}. "
        f"Install it (apt-get install {WRK_PACKAGE}) and run again."
    )


def _apt_install(package: str) -> str:
    """``apt-get update && apt-get install -y package``; what went wrong, or "" if nothing did."""
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    # sudo -n: fail at once rather than wait for a password nobody will type.
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        return "not root, and no sudo"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        [*sudo, "apt-get", "update", "-qq"],
        [*sudo, "apt-get", "install", "-y", "-qq", package],
    ):
        try:
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv)}: {exc}"
        if done.returncode != 0:
            return f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}"
    return ""


def run_load(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 2,
    headers: Mapping[str, str] | None = None,
    alt_headers: Mapping[str, str] | None = None,
    alt_every: int = 0,
    pool: HeaderPool | None = None,
) -> LoadResult:
    """One bounded wrk run (see :func:`benchmarks.wrk.run_wrk`), wrk installed first if missing."""
    ensure_wrk()
    return run_wrk(
        url,
        duration=duration,
        connections=connections,
        threads=threads,
        headers=headers,
        alt_headers=alt_headers,
        alt_every=alt_every,
        pool=pool,
    )
