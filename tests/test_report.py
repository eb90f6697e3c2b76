"""``optibase-edge report``: a generated events file with known counts gives SciPy's figures.

The file is written as the library writes it (the development-mode JSON lines,
encoded by the Segment mapping), with a ``{"batch": [...]}`` body and bad lines
mixed in. Every figure of ``--json`` is then checked against SciPy computed
from the known counts, so the reading, the attribution and the statistics are
checked together. The last test runs a real site in development mode.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scipy import integrate, stats
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from optibase_edge import Conversion, ConversionType, Optibase, OptibaseMiddleware, Test, Variant
from optibase_edge._cli import main
from optibase_edge._segment import batch_body, encode, to_message
from tests.support.events import conversion, identify, viewed
from tests.support.user_agents import AS_A_BROWSER

# Visitors and converting visitors per variant: the known counts.
VISITORS = {"control": 400, "bold": 410, "social": 390}
SIGNUPS = {"control": 40, "bold": 62, "social": 41}
PURCHASES = {"control": 0, "bold": 9, "social": 4}  # a control rate of 0: uplift undefined
WEIGHTS = {"control": 1.0, "bold": 1.0, "social": 1.0}

CONFIG = """
[[tests]]
id = "hero"
name = "Home page headline"
pages = ["/"]
[[tests.variants]]
id = "control"
name = "Calm"
[[tests.variants]]
id = "bold"
name = "Bold promise"
[[tests.variants]]
id = "social"
name = "Social proof"

[[conversions]]
id = "signup"
type = "CLICK"
selector = "#signup"
name = "Started a trial"

[[conversions]]
id = "purchase"
type = "PROGRAMMATIC"
"""


def line(event: Any) -> bytes:
    return encode(to_message(event))


def events_lines() -> Iterator[bytes]:
    """The known counts, as the library writes them, with every way of converting mixed in."""
    for variant, n in VISITORS.items():
        for i in range(n):
            visitor = f"{variant}-{i}"
            yield line(identify(visitor))
            yield line(viewed(visitor, "hero", variant))
            if i < SIGNUPS[variant]:
                yield line(conversion(visitor, "signup"))
                if i % 2:
                    yield line(conversion(visitor, "signup"))  # twice: still one visitor
            if i < PURCHASES[variant]:
                # A backend job knows only the user; the visitor's Identify links them.
                yield line(identify(visitor, f"user-{visitor}"))
                yield line(conversion(None, "purchase", user_id=f"user-{visitor}"))
    # A visitor never exposed converts: counted nowhere.
    yield line(conversion("stranger", "signup"))


def write_events(path: Path) -> None:
    lines = list(events_lines())
    # A delivery batch body on one line, and lines that are not messages at all.
    batched = batch_body(lines[-40:], 0.0)
    bad = [b"not json", b"[1, 2]", b'{"batch": "nope"}', b"\xff\xfe", b"[" * 5000]
    path.write_bytes(b"\n".join([*lines[:-40], batched, b"", *bad]) + b"\n")


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    write_events(path)
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "optibase.toml"
    path.write_text(CONFIG)
    return path


# --------------------------------------------------------------------------- SciPy's figures


def scipy_p2bb(counts: list[tuple[int, int]]) -> list[float]:
    posteriors = [stats.beta(1 + c, 1 + n - c) for c, n in counts]
    out = []
    for i, mine in enumerate(posteriors):
        others = posteriors[:i] + posteriors[i + 1 :]

        def integrand(x: float, mine: Any = mine, others: Any = others) -> float:
            return float(mine.pdf(x) * math.prod(o.cdf(x) for o in others))

        means = sorted(p.mean() for p in posteriors)
        value, _ = integrate.quad(integrand, 0, 1, points=means, limit=500, epsabs=1e-11)
        out.append(value)
    return out


def expected_figures(converted: dict[str, int]) -> dict[str, dict[str, Any]]:
    z = stats.norm.ppf(0.975)
    c0, n0 = converted["control"], VISITORS["control"]
    p0 = c0 / n0
    p2bb = scipy_p2bb([(converted[v], VISITORS[v]) for v in VISITORS])
    figures = {}
    for index, (variant, n) in enumerate(VISITORS.items()):
        c = converted[variant]
        p = c / n
        row: dict[str, Any] = {"visitors": c, "rate": p, "p2bb": p2bb[index]}
        if variant == "control":
            row |= {"uplift": None, "ci_low": None, "ci_high": None, "p_value": None}
        else:
            se = math.sqrt(p * (1 - p) / n + p0 * (1 - p0) / n0)
            pooled = (c + c0) / (n + n0)
            z_test = (p - p0) / math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / n0))
            row |= {
                "uplift": p / p0 - 1 if p0 else None,
                "ci_low": p - p0 - z * se,
                "ci_high": p - p0 + z * se,
                "p_value": 2 * stats.norm.sf(abs(z_test)),
            }
        figures[variant] = row
    return figures


def assert_close(actual: Any, expected: Any, *, abs_tol: float = 0.0) -> None:
    if expected is None or isinstance(expected, bool | int | str):
        assert actual == expected
    else:
        assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=abs_tol), (actual, expected)


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("with_config", [True, False])
def test_report_json_gives_scipy_s_figures_for_known_counts(
    events: Path, config: Path, with_config: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", str(events), "--json"] + (["--config", str(config)] if with_config else [])
    assert main(argv) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)

    [test] = document["tests"]
    observed = list(VISITORS.values())
    srm = stats.chisquare(observed, [sum(observed) / 3] * 3).pvalue
    assert test["test_id"] == "hero" and test["srm_warning"] is False
    assert_close(test["srm_p_value"], srm)
    # With a configuration, its order; without, "control" first and then by id.
    order = list(VISITORS) if with_config else ["control", "bold", "social"]
    assert [v["variant_id"] for v in test["variants"]] == order
    for conversion_id, known in (("signup", SIGNUPS), ("purchase", PURCHASES)):
        expected = expected_figures(known)
        for variant in test["variants"]:
            assert variant["control"] is (variant["variant_id"] == "control")
            assert variant["visitors"] == VISITORS[variant["variant_id"]]
            figures = variant["conversions"][conversion_id]
            want = expected[variant["variant_id"]]
            assert list(figures) == list(
                ["visitors", "rate", "uplift", "ci_low", "ci_high", "p_value", "p2bb"]
            )
            for key, value in want.items():
                assert_close(figures[key], value, abs_tol=1e-6 if key == "p2bb" else 0.0)
    # Five bad lines, named; the stranger's signup and the blank line are not errors.
    assert "5 line(s) skipped" in err
    assert "line " in err and "Traceback" not in err


def test_report_reads_standard_input(
    events: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(events.read_bytes()))
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["report", "-", "--json"]) == 0
    from_stdin = json.loads(capsys.readouterr().out)
    assert main(["report", str(events), "--json"]) == 0
    assert from_stdin == json.loads(capsys.readouterr().out)
    assert not stdin.closed


def test_the_table_names_things_and_puts_the_control_first(
    events: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(events), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Test Home page headline (hero): 3 variants, 1,200 visitors\n")
    assert "sample ratio: p = " in out
    signup = out[out.index("Started a trial (signup)") :]
    rows = [" ".join(row.split()) for row in signup.splitlines()[2:5]]
    assert rows[0].startswith("Calm (control) [control] 400 40 10.00% — — — ")
    assert rows[1].startswith("Bold promise (bold) 410 62 15.12% +51.2% [+0.58, +9.67] pts 0.0280")
    assert rows[1].endswith("better than the control at 5 %")
    assert rows[2].startswith("Social proof (social) 390 41 10.51% +5.1%")
    assert rows[2].endswith("more visitors per variant")
    purchase = out[out.index("\n  purchase\n") :]
    control = " ".join(purchase.splitlines()[3].split())
    assert control.startswith("Calm (control) [control] 400 0 0.00% — — — ")


def test_a_lopsided_split_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.jsonl"
    counts = {"control": 1000, "bold": 820}
    path.write_bytes(
        b"\n".join(line(viewed(f"{v}{i}", "hero", v)) for v, n in counts.items() for i in range(n))
    )
    assert main(["report", str(path), "--json"]) == 0
    [test] = json.loads(capsys.readouterr().out)["tests"]
    srm = stats.chisquare(list(counts.values())).pvalue
    assert srm < 0.001 and test["srm_warning"] is True
    assert_close(test["srm_p_value"], srm)
    assert main(["report", str(path)]) == 0
    assert "! sample ratio mismatch" in capsys.readouterr().out


def test_no_experiment_data_is_said_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(line(identify("a")) + b"\n")
    assert main(["report", str(path)]) == 0
    assert "No experiment data" in capsys.readouterr().out
    assert main(["report", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tests": []}


def test_unreadable_input_and_a_bad_configuration_are_clear_errors(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: cannot read it: No such file or directory" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[[tests]]\nid = "hero"\nvariants = ["a"]\nwieght = 2\n')
    assert main(["report", str(events), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}: ") and "wieght" in err and "Traceback" not in err


def test_a_development_mode_site_s_own_file_reports_what_its_visitors_saw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "optibase-events.jsonl"
    ob = Optibase(
        tests=[Test("hero", [Variant("control"), Variant("bold")], pages=["/"])],
        conversions=[Conversion("pricing", ConversionType.PAGE_VIEW, url="/pricing")],
        events_path=events,
        flush_interval=0.05,
    )

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse("<html><head></head><body>hi</body></html>")

    app = Starlette(routes=[Route("/", page), Route("/pricing", page)])
    app.add_middleware(OptibaseMiddleware, optibase=ob)
    seen: dict[str, int] = {"control": 0, "bold": 0}
    priced: dict[str, int] = {"control": 0, "bold": 0}
    with TestClient(app, headers=dict(AS_A_BROWSER)) as client:
        for i in range(40):
            client.cookies.clear()
            client.get("/")
            [assigned] = client.get("/_optibase/variants").json()["variants"]
            seen[assigned["variant_id"]] += 1
            if i % 3 == 0:
                client.get("/pricing")
                priced[assigned["variant_id"]] += 1
    # The lifespan's shutdown flushed the queue into the file.

    assert main(["report", str(events), "--json"]) == 0
    [test] = json.loads(capsys.readouterr().out)["tests"]
    found = {v["variant_id"]: v for v in test["variants"]}
    assert {v: found[v]["visitors"] for v in seen} == seen
    assert {v: found[v]["conversions"]["pricing"]["visitors"] for v in priced} == priced
