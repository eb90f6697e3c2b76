"""7. Screening: what telling a bot from a person costs per request, and how right it is.

The list is crawler-user-agents (the monperrus dataset: ~1,500 regexes, each
with example User-Agents). Forms of screening measured, each on the same
User-Agents, in interleaved rounds:

* ``ours``       -- what optibase_edge ships (``optibase_edge._screening``): the
                    list's plain-text patterns in one trie, its other patterns one
                    by one, then our own patterns on the lower-cased text; timed
                    uncached (the ``lru_cache`` bypassed: what a cache miss costs)
                    and cached (a hit);
* ``one regex``  -- the list joined by ``|``, case-sensitive as its authors intend;
* ``is_crawler`` -- the package's own ``crawleruseragents.is_crawler`` (the list
                    compiled 25 patterns per regex, searched one regex after another);
* ``before``     -- the regex optibase_edge screened with before the list
                    (:data:`BEFORE`, kept here as the reference).

The people are the real browsers of ``tests/support/user_agents.py`` (desktop,
mobile, WebViews, in-app browsers): the usual case, and the dearest, since
no pattern matches and every one is tried. The bots are the list's own
examples. Also: a person's User-Agent padded to 4 KB (``ours`` reads its first
512 characters; ``ours uncapped`` all of them), the time to compile each form
(``re``'s cache purged first) and to import the package (its JSON, in a fresh
interpreter), the recall on the list's examples, and the false positives on
the real browsers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial

import crawleruseragents
from crawleruseragents import CRAWLER_USER_AGENTS_DATA

from optibase_edge._screening import (
    _EXTRAS,
    _NOT_BOTS,
    _SCREENED_LENGTH,
    _is_listed,
    compile_patterns,
    is_listed_bot,
)
from tests.support.user_agents import BROWSERS

from .config import Config
from .report import Row, SectionResult, fmt_us
from .rounds import interleave, median, paired_ratio

# What optibase_edge matched against the lower-cased User-Agent before it used the list.
BEFORE = re.compile(
    r"(?<!cu)bot(?:[\s/;:,)_-]|$)|crawl|spider|slurp|mediapartners|"
    r"facebookexternalhit|facebookcatalog|embedly|quora link preview|whatsapp|"
    r"headlesschrome|phantomjs|lighthouse|pagespeed|pingdom|"
    r"statuscake|site24x7|newrelicpinger|datadog synthetics"
)
PATTERNS = [entry["pattern"] for entry in CRAWLER_USER_AGENTS_DATA]
PEOPLE = list(BROWSERS.values())
BOTS = [user_agent for entry in CRAWLER_USER_AGENTS_DATA for user_agent in entry["instances"]]
LEFT_OUT = [
    user_agent
    for entry in CRAWLER_USER_AGENTS_DATA
    if entry["pattern"] in _NOT_BOTS
    for user_agent in entry["instances"]
]
# An odd header: a person's User-Agent padded to 4 KB.
LONG = PEOPLE[0] + " " + "x" * (4096 - len(PEOPLE[0]) - 1)
IMPORT = (
    "import time; t = time.perf_counter(); import crawleruseragents; print(time.perf_counter() - t)"
)

Check = Callable[[str], bool]


def ours_uncached(user_agent: str) -> bool:
    """``is_listed_bot`` as on a cache miss: the same cut, the cached function's body."""
    return _is_listed.__wrapped__(user_agent.encode("latin-1")[:_SCREENED_LENGTH])


def ours_uncapped(user_agent: str) -> bool:
    """:func:`ours_uncached` without the cut to the first characters."""
    return _is_listed.__wrapped__(user_agent.encode("latin-1"))


def one_regex() -> Check:
    regex = re.compile("|".join(PATTERNS))
    return lambda user_agent: regex.search(user_agent) is not None


def before(user_agent: str) -> bool:
    return BEFORE.search(user_agent.lower()) is not None


def us_per_check(check: Check, user_agents: Sequence[str], repeat: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(repeat):
        for user_agent in user_agents:
            check(user_agent)
    return (time.perf_counter_ns() - t0) / (repeat * len(user_agents)) / 1000.0


def ms_to_compile(compile_: Callable[[], object]) -> float:
    re.purge()  # else re.compile returns what it compiled last time
    t0 = time.perf_counter_ns()
    compile_()
    return (time.perf_counter_ns() - t0) / 1e6


def ms_to_import() -> float:
    out = subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True, check=True)
    return float(out.stdout) * 1000.0


def compile_ours() -> None:
    compile_patterns(p for p in PATTERNS if p not in _NOT_BOTS)
    re.compile(_EXTRAS.pattern)


def compile_one_regex() -> None:
    re.compile("|".join(PATTERNS))


def compile_in_chunks() -> None:
    for start in range(0, len(PATTERNS), 25):
        re.compile("|".join(PATTERNS[start : start + 25]))


def faster(reference: list[float], ours: list[float]) -> str:
    ratio = paired_ratio(reference, ours)
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def run(cfg: Config) -> SectionResult:
    result = SectionResult("screening")
    checks: dict[str, Check] = {
        "ours": ours_uncached,
        "one regex": one_regex(),
        "is_crawler": crawleruseragents.is_crawler,
        "before": before,
    }
    people_bytes = [user_agent.encode("latin-1") for user_agent in PEOPLE]

    hits = 20 * cfg.screen_repeat  # a hit costs a few hundred times less than a miss

    def cached() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(hits):
            for user_agent in people_bytes:
                is_listed_bot(user_agent)
        return (time.perf_counter_ns() - t0) / (hits * len(people_bytes)) / 1000.0

    measures: dict[str, Callable[[], float]] = {}
    for name, check in checks.items():
        measures[f"people, {name}"] = partial(us_per_check, check, PEOPLE, cfg.screen_repeat)
        measures[f"bots, {name}"] = partial(us_per_check, check, BOTS, 1)
    measures["long, ours"] = partial(us_per_check, ours_uncached, [LONG], cfg.screen_repeat)
    measures["long, ours uncapped"] = partial(us_per_check, ours_uncapped, [LONG], 1)
    measures["long, one regex"] = partial(us_per_check, checks["one regex"], [LONG], 1)
    measures["people, ours cached"] = cached
    measures["compile, ours"] = partial(ms_to_compile, compile_ours)
    measures["compile, one regex"] = partial(ms_to_compile, compile_one_regex)
    measures["compile, is_crawler"] = partial(ms_to_compile, compile_in_chunks)
    measures["import crawleruseragents"] = ms_to_import
    raw = interleave(measures, cfg.rounds)

    def row(figure: str, ours: str, reference: str) -> Row:
        value = median(raw[ours])
        return Row(
            "7 screening",
            figure,
            fmt_us(value),
            f"{reference.split(', ')[1]} {fmt_us(median(raw[reference]))}",
            faster(raw[reference], raw[ours]),
        )

    for reference in ("one regex", "is_crawler", "before"):
        result.rows.append(
            row("µs per check, a person, uncached", "people, ours", f"people, {reference}")
        )
    result.rows.append(row("µs per check, a bot, uncached", "bots, ours", "bots, one regex"))
    result.rows.append(row("µs per check, a person, cached", "people, ours cached", "people, ours"))
    for reference in ("ours uncapped", "one regex"):
        result.rows.append(
            row("µs per check, a 4 KB User-Agent", "long, ours", f"long, {reference}")
        )
    result.rows.append(
        Row(
            "7 screening",
            "ms to compile the list",
            f"{median(raw['compile, ours']):.1f} ms",
            f"one regex {median(raw['compile, one regex']):.1f} ms",
            faster(raw["compile, one regex"], raw["compile, ours"]),
        )
    )
    result.rows.append(
        Row(
            "7 screening",
            "ms to import crawleruseragents (its JSON)",
            f"{median(raw['import crawleruseragents']):.1f} ms",
            "",
            "",
        )
    )

    screened = {name: sum(map(check, BOTS)) for name, check in checks.items()}
    wrong = {
        name: [label for label, user_agent in BROWSERS.items() if check(user_agent)]
        for name, check in checks.items()
    }
    result.rows.append(
        Row(
            "7 screening",
            f"recall on the list's {len(BOTS):,} examples",
            f"{screened['ours']:,}",
            f"one regex {screened['one regex']:,}, before {screened['before']:,}",
            f"{screened['ours'] / len(BOTS):.2%}",
            f"all but the {len(LEFT_OUT)} left out",
            screened["ours"] == len(BOTS) - len(LEFT_OUT),
        )
    )
    result.rows.append(
        Row(
            "7 screening",
            f"false positives on {len(PEOPLE)} real browsers",
            f"{len(wrong['ours'])}",
            f"one regex {len(wrong['one regex'])}, before {len(wrong['before'])}",
            "",
            "0",
            not wrong["ours"],
        )
    )
    result.raw = {
        "rounds": cfg.rounds,
        "repeat": cfg.screen_repeat,
        "people": len(PEOPLE),
        "bots": len(BOTS),
        "patterns": len(PATTERNS),
        "us_per_check_or_ms": raw,
        "screened_examples": screened,
        "false_positives": wrong,
    }
    return result
