"""Interleaved rounds, and the medians and paired ratios that summarise them.

A *measure* is a callable that does one batch of work and returns its own
figure (µs per call, requests/s, ...); timing happens inside it. The
interleavers run every measure once per round, so the i-th values of any two
measures were taken back to back and can be compared as a pair.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values (a section that measured nothing still reports)."""
    return float(statistics.median(values)) if values else float("nan")


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a[i] / b[i] (rounds are paired: measured back to back).

    Rounds where b[i] is zero are left out. Raises ValueError if the lengths differ.
    """
    ratios = [x / y for x, y in zip(a, b, strict=True) if y]
    return median(ratios)


def rotate(names: Sequence[str], round_index: int) -> list[str]:
    """The measuring order for one round: rotated, so no variant always goes first."""
    k = round_index % len(names)
    return [*names[k:], *names[:k]]


def interleave(
    measures: Mapping[str, Callable[[], float]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run every measure once per round, rotating the order; return the per-round values.

    The *warmup* rounds run first and are discarded. Before each kept call the
    cyclic GC runs, so one variant's garbage is not collected on another's clock.
    """
    names = list(measures)
    for w in range(warmup):
        for name in rotate(names, w):
            measures[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in rotate(names, r):
            gc.collect()
            results[name].append(measures[name]())
    return results


async def interleave_async(
    measures: Mapping[str, Callable[[], Awaitable[float]]],
    rounds: int,
    warmup: int = 1,
    between: Callable[[str], Awaitable[None]] | None = None,
) -> dict[str, list[float]]:
    """:func:`interleave` for coroutine measures.

    *between*, if given, is awaited with the measure's name after every call,
    warm-up included: the place for untimed work such as draining a queue.
    """
    names = list(measures)
    for w in range(warmup):
        for name in rotate(names, w):
            await measures[name]()
            if between is not None:
                await between(name)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in rotate(names, r):
            gc.collect()
            results[name].append(await measures[name]())
            if between is not None:
                await between(name)
    return results
