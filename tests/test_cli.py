from __future__ import annotations

from pathlib import Path

import pytest
from starlette.types import Receive, Scope, Send

from optibase_edge._cli import main
from tests.support.server import serve

GOOD = """
secret_keys = ["cli-secret-key-0123456789abcdef0123"]
segment_write_key = "wk"
segment_region = "eu"

[[tests]]
id = "hero"
pages = ["/", "/landing/*"]
traffic = 0.5
[[tests.variants]]
id = "control"
[[tests.variants]]
id = "bold"
weight = 3

[[conversions]]
id = "pricing"
type = "PAGE_VIEW"
url = "/pricing"
one_per_visitor = true
"""


@pytest.fixture(autouse=True)
def _no_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPTIBASE_SECRET_KEYS", "OPTIBASE_SEGMENT_WRITE_KEY", "OPTIBASE_SEGMENT_REGION"):
        monkeypatch.delenv(name, raising=False)


def test_check_summarises_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(GOOD)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "test hero [running, traffic 50%]: control (1), bold (3)" in out
    assert "conversion pricing [PAGE_VIEW, one per visitor]: /pricing" in out
    assert "https://events.eu1.segmentapis.com" in out


CONTROLS = """
secret_keys = ["cli-secret-key-0123456789abcdef0123"]
hosts = ["www.example.com", "*.example.com"]
honor_gpc = false
preview_param = "qa"
split_url = "redirect"
cache_control = "private"
screen_bots = false
collector_ip_budget = [2000, 100]
trusted_proxies = ["10.0.0.0/8", "fd00::/8"]
ip = "anonymized"

[[tests]]
id = "landing"
pages = ["/landing"]
variants = [{id = "original"}, {id = "new", path = "/landing-new"}]

[[conversions]]
id = "lead"
type = "PROGRAMMATIC"
from_browser = true
"""


def test_check_shows_every_experiment_control(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(CONTROLS)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "original (1), new (1, serves /landing-new); /landing" in out
    assert "conversion lead [PROGRAMMATIC]: from code and from the browser" in out
    assert "hosts: www.example.com, *.example.com" in out
    assert "consent: assumed, Sec-GPC ignored" in out
    assert "previews: ?qa=test:variant" in out
    assert "split-URL variants: redirect" in out
    assert "cache-control: private" in out
    assert "bot screening: off" in out
    assert (
        "collector budgets: per visitor 20 beacons at once, then 1 a second; "
        "per address 2000 beacons at once, then 100 a second"
    ) in out
    assert "client address: forwarded by 10.0.0.0/8, fd00::/8; to Segment: anonymized" in out


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (CONTROLS.replace('"/landing-new"', '"landing-new"'), "variants[new].path"),
        (CONTROLS.replace('split_url = "redirect"', 'split_url = "proxy"'), "split_url"),
        (CONTROLS.replace('"*.example.com"', '"https://x"'), "hosts"),
        (CONTROLS.replace('"fd00::/8"', '"fd00::/8x"'), "trusted_proxies"),
        (CONTROLS.replace('ip = "anonymized"', 'ip = "hashed"'), "ip"),
        (CONTROLS.replace("from_browser = true", "from_browser = 1"), "from_browser"),
        (CONTROLS.replace("from_browser", "from_browsr"), "did you mean 'from_browser'"),
        (GOOD.replace('type = "PAGE_VIEW"', 'type = "HOVER"'), "conversions[pricing].type"),
        (GOOD.replace("weight = 3", "weight = 0"), "variants[bold].weight"),
        (GOOD.replace('segment_region = "eu"', 'segment_region = "ap"'), "segment_region"),
        (GOOD.replace('secret_keys = ["cli-secret-key-0123456789abcdef0123"]', ""), "secret_keys"),
        (GOOD + "\nbogus = 1\n", "bogus"),
        (CONTROLS.replace("[2000, 100]", "[2000]"), "collector_ip_budget"),
        (CONTROLS.replace("[2000, 100]", "[0, 100]"), "collector_ip_budget"),
        ("[[tests]\n", "not valid TOML"),
    ],
)
def test_check_names_the_bad_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str
) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(text)
    assert main(["check", str(path)]) == 2
    assert field in capsys.readouterr().err


def test_check_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "absent.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_example_configuration_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parent.parent / "optibase.example.toml"
    assert main(["check", str(example)]) == 0
    out = capsys.readouterr().out
    assert "test hero [running, traffic 100%]: control (1), bold (1); /, /landing/*" in out
    assert "test pricing_layout [running, traffic 50%]: cards (1), table (1); /pricing" in out
    for conversion in ("signup [CLICK, one per visitor]", "pricing [PAGE_VIEW]", "purchase"):
        assert f"conversion {conversion}" in out
    assert "development mode" in out  # no secrets in the file: they come from the environment


BLOCKS_PAGE = (
    b"<html><body>"
    b'<div data-optibase-test="hero" data-optibase-variant="control">Calm</div>'
    b'<div data-optibase-test="hero" data-optibase-variant="bold">Bold</div>'
    b'<div data-optibase-test="hero" data-optibase-variant="blod">Typo</div>'
    b"<p data-optibase-test=banner data-optibase-variant=x>Sale</p>"
    b"</body></html>"
)


def test_proxy_dry_run_shows_the_blocks_of_a_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(GOOD)

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        assert scope["path"] == "/landing/spring"
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BLOCKS_PAGE})

    with serve(upstream, lifespan="off") as url:
        assert (
            main(
                ["proxy", "--upstream", url, "--config", str(path), "--dry-run", "/landing/spring"]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert (
        f"GET {url}/landing/spring: 200, text/html; charset=utf-8, {len(BLOCKS_PAGE)} bytes" in out
    )
    at = [
        BLOCKS_PAGE.rindex(b"<div", 0, BLOCKS_PAGE.index(b'variant="%s"' % variant))
        for variant in (b"control", b"bold", b"blod")
    ]
    assert f"test hero: 3 block(s): control at byte {at[0]}, bold at byte {at[1]}, " in out
    assert f"blod at byte {at[2]}" in out
    assert "outside the test: control (the control)" in out
    assert "not variants of hero, so never shown: blod" in out
    assert "test banner: 1 block(s)" in out
    assert "not in the configuration: everyone is shown x (the first)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upstream", "ftp://127.0.0.1:1"], "upstream_url"),
        (["--upstream", "http://127.0.0.1:1", "--workers", "0"], "--workers must be 1 or more"),
    ],
)
def test_proxy_refuses_a_bad_start_naming_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(GOOD)
    assert main(["proxy", "--config", str(path), *args]) == 2
    assert message in capsys.readouterr().err


def test_proxy_refuses_a_bad_configuration_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(GOOD.replace("traffic = 0.5", "traffic = 5"))
    assert main(["proxy", "--upstream", "http://127.0.0.1:1", "--config", str(path)]) == 2
    assert "traffic" in capsys.readouterr().err


def test_proxy_dry_run_lists_blocks_nested_in_any_variant_and_a_winner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(
        GOOD
        + '\n[[tests]]\nid = "cta"\nvariants = ["green", "red"]\n'
        + '\n[[tests]]\nid = "old"\nvariants = ["a", "b"]\nstatus = "stopped"\nwinner = "b"\n'
    )
    page = (
        b'<div data-optibase-test="hero" data-optibase-variant="control">Calm</div>'
        b'<div data-optibase-test="hero" data-optibase-variant="bold">'
        b'<a data-optibase-test="cta" data-optibase-variant="gren">Go</a></div>'
        b'<p data-optibase-test="old" data-optibase-variant="a">A</p>'
    )

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/html")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": page})

    with serve(upstream, lifespan="off") as url:
        assert main(["proxy", "--upstream", url, "--config", str(path), "--dry-run", "/"]) == 0
    out = capsys.readouterr().out
    assert f"test cta: 1 block(s): gren at byte {page.index(b'<a')}" in out
    assert "not variants of cta, so never shown: gren" in out
    assert "stopped: everyone is shown b (the winner)" in out
