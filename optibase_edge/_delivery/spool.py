"""The spool: undelivered messages left on disk at shutdown, for the next process.

Writers append whole records with one ``O_APPEND`` write, each record starting
with a newline, so a crashed writer's torn line stays a line of its own. A
reader takes the whole file over with an atomic rename (of several processes
starting at once, one gets it) and skips any line that is not a message.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

from .._segment import MAX_EVENT_BYTES


class Taken(NamedTuple):
    """What :func:`take_over` read: the messages, and how many lines it skipped."""

    messages: list[bytes]
    skipped: int


def append(path: Path, messages: Sequence[bytes]) -> None:
    """Append *messages* to the spool at *path*; raises ``OSError``."""
    # Leading newline: if a crashed writer left a torn line, it stays a line of
    # its own (skipped on reading) instead of swallowing our first message.
    data = b"\n" + b"".join(message + b"\n" for message in messages)
    # O_APPEND and one write: processes sharing a spool do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:  # a regular file only writes short on a full disk or a signal
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def take_over(path: Path) -> Taken | None:
    """Take the spool at *path* (None when there is none); raises ``OSError``.

    The file is renamed first, so only one process reads it; if reading then
    fails, the renamed file is kept (the error says where) rather than lost.
    """
    taken = path.with_name(f"{path.name}.{os.getpid()}.taking")
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return None
    messages: list[bytes] = []
    skipped = 0
    with open(taken, "rb") as file:
        for line in _lines(file):
            if _is_message(line):
                messages.append(line)
            elif line:
                skipped += 1  # a torn tail from a crash, or not ours
    # Read already: at worst a stale file is left behind; nothing is sent twice.
    with contextlib.suppress(OSError):
        os.unlink(taken)
    return Taken(messages, skipped)


def _lines(file: BinaryIO) -> Iterator[bytes]:
    """Stripped lines; an over-long one (corrupt: no message is that big) yields b"?"."""
    limit = MAX_EVENT_BYTES + 2
    while True:
        line = file.readline(limit)
        if not line:
            return
        if len(line) == limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip to the end of it
                line = file.readline(limit)
            yield b"?"
            continue
        yield line.strip()


def _is_message(line: bytes) -> bool:
    if not line or len(line) > MAX_EVENT_BYTES:
        return False
    try:
        message = json.loads(line)
    except ValueError:  # bad JSON or bad UTF-8
        return False
    return (
        isinstance(message, dict)
        and isinstance(message.get("messageId"), str)
        and isinstance(message.get("type"), str)
    )
