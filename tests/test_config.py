"""Configuration: validation (ConfigError naming the field), env fallbacks, TOML loading."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from optibase_edge import ConfigError, Conversion, ConversionType, Optibase, Test, Variant
from optibase_edge._cookie import CookieCodec
from optibase_edge._settings import SEGMENT_BASE_URLS, RedisUrl, Settings

LONG_KEY = "a-secret-key-of-32-characters-or-more"
OLD = "old-" + "o" * 32
NEW = "new-" + "n" * 32

ENV_NAMES = (
    "OPTIBASE_SECRET_KEYS",
    "OPTIBASE_SEGMENT_WRITE_KEY",
    "OPTIBASE_SEGMENT_REGION",
    "OPTIBASE_EVENTS_PATH",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def two(*ids: str) -> list[Variant]:
    return [Variant(i) for i in (ids or ("a", "b"))]


def a_test(test_id: str = "hero", **kwargs: Any) -> Test:
    kwargs.setdefault("variants", two())
    return Test(id=test_id, **kwargs)


def settings_for(environ: dict[str, str] | None = None, **kwargs: Any) -> Settings:
    """Optibase(**kwargs).settings, with exactly *environ* as the OPTIBASE_* variables."""
    kwargs.setdefault("tests", [a_test()])
    with mock.patch.dict(os.environ, environ or {}):
        return Optibase(**kwargs).settings


def raises_naming(*fragments: str) -> Callable[[Callable[[], object]], str]:
    def check(build: Callable[[], object]) -> str:
        with pytest.raises(ConfigError) as info:
            build()
        message = str(info.value)
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message!r}"
        return message

    return check


# -- every ConfigError case names its field ----------------------------------------------


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_duplicate_test_ids() -> None:
    raises_naming("tests", "'hero'")(lambda: settings_for(tests=[a_test(), a_test()]))


def test_duplicate_variant_ids() -> None:
    raises_naming("tests[hero].variants", "'a'")(
        lambda: Test(id="hero", variants=[Variant("a"), Variant("b"), Variant("a")])
    )


def test_duplicate_conversion_ids() -> None:
    conv = Conversion(id="buy", type=ConversionType.PROGRAMMATIC)
    raises_naming("conversions", "'buy'")(lambda: settings_for(conversions=[conv, conv]))


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_variants(count: int) -> None:
    raises_naming("tests[hero].variants")(
        lambda: Test(id="hero", variants=[Variant(f"v{i}") for i in range(count)])
    )


@pytest.mark.parametrize("weight", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, False])
def test_bad_weight(weight: Any) -> None:
    raises_naming("variants[x].weight")(lambda: Variant("x", weight=weight))


@pytest.mark.parametrize("weight", ["1", None, [1]])
def test_weight_of_wrong_type(weight: Any) -> None:
    raises_naming("variants[x].weight")(lambda: Variant("x", weight=weight))


def test_weights_whose_sum_overflows() -> None:
    huge = [Variant("a", weight=1e308), Variant("b", weight=1e308)]
    raises_naming("tests[t].variants", "weights add up")(lambda: Test("t", huge))


def test_split_url_variants_are_checked() -> None:
    for path in ["landing-b", "//evil.example/x", "/b?x=1", "/b#top", "/b c", ""]:
        raises_naming("variants[b].path")(functools.partial(Variant, "b", path=path))
    split = [Variant("a"), Variant("b", path="/landing-b")]
    raises_naming("tests[t].variants[b].path", "pages")(lambda: Test("t", split))
    assert Test("t", split, pages=["/landing"]).variants[1].path == "/landing-b"


def test_only_a_programmatic_or_click_conversion_comes_from_the_browser() -> None:
    raises_naming("conversions[p].from_browser")(
        lambda: Conversion("p", ConversionType.PAGE_VIEW, url="/p", from_browser=True)
    )
    assert not Conversion("buy", ConversionType.PROGRAMMATIC).browser_may_fire
    assert Conversion("lead", ConversionType.PROGRAMMATIC, from_browser=True).browser_may_fire
    assert Conversion("c", ConversionType.CLICK, selector="#c").browser_may_fire


@pytest.mark.parametrize(
    ("setting", "value", "fragment"),
    [
        ("hosts", ["https://www.example.com"], "hosts"),
        ("hosts", ["www.example.com:443"], "hosts"),
        ("hosts", ["*"], "hosts"),
        ("hosts", "www.example.com", "hosts"),
        ("consent", True, "consent"),
        ("honor_gpc", "yes", "honor_gpc"),
        ("preview_param", "", "preview_param"),
        ("preview_param", "a&b", "preview_param"),
        ("split_url", "proxy", "split_url"),
        ("cache_control", "public", "cache_control"),
        ("screen_bots", "yes", "screen_bots"),
    ],
)
def test_bad_experiment_controls_name_the_field(setting: str, value: Any, fragment: str) -> None:
    raises_naming(fragment)(lambda: Optibase(**{setting: value}))


@pytest.mark.parametrize("weight", [1, 0.001, 3, 2.5])
def test_good_weight(weight: float) -> None:
    assert Variant("x", weight=weight).weight == weight


@pytest.mark.parametrize("bad_id", ["", "   ", None, 7, "x" * 201])
def test_bad_ids(bad_id: Any) -> None:
    raises_naming("variant.id")(lambda: Variant(bad_id))
    raises_naming("test.id")(lambda: Test(id=bad_id, variants=two()))
    raises_naming("conversion.id")(lambda: Conversion(id=bad_id, type=ConversionType.PROGRAMMATIC))


def test_variants_must_be_variant_objects() -> None:
    raises_naming("tests[hero].variants")(lambda: Test(id="hero", variants=["a", "b"]))  # type: ignore[list-item]


@pytest.mark.parametrize("selector", [None, ""])
def test_click_without_selector(selector: str | None) -> None:
    raises_naming("conversions[signup].selector")(
        lambda: Conversion(id="signup", type=ConversionType.CLICK, selector=selector)
    )


@pytest.mark.parametrize("url", [None, ""])
def test_page_view_without_url(url: str | None) -> None:
    raises_naming("conversions[pricing].url")(
        lambda: Conversion(id="pricing", type=ConversionType.PAGE_VIEW, url=url)
    )


def test_page_view_url_must_be_a_path() -> None:
    raises_naming("conversions[pricing].url")(
        lambda: Conversion(id="pricing", type=ConversionType.PAGE_VIEW, url="pricing")
    )


def test_conversion_type_accepts_string_and_rejects_unknown() -> None:
    conv = Conversion(id="buy", type="PROGRAMMATIC")  # type: ignore[arg-type]
    assert conv.type is ConversionType.PROGRAMMATIC
    raises_naming("conversions[buy].type")(lambda: Conversion(id="buy", type="SWIPE"))  # type: ignore[arg-type]


@pytest.mark.parametrize("region", ["asia", "usa", "eu2", "u s"])
def test_region_other_than_us_or_eu(region: str) -> None:
    raises_naming("segment_region")(lambda: settings_for(segment_region=region))


def test_region_from_env_is_validated_too() -> None:
    raises_naming("segment_region")(
        lambda: settings_for(environ={"OPTIBASE_SEGMENT_REGION": "mars"})
    )


def test_write_key_without_secret_key() -> None:
    raises_naming("secret_keys")(lambda: settings_for(segment_write_key="wk"))
    raises_naming("secret_keys")(lambda: settings_for(environ={"OPTIBASE_SEGMENT_WRITE_KEY": "wk"}))


@pytest.mark.parametrize("traffic", [-0.01, 1.01, 2, math.nan, True, "0.5", None])
def test_bad_traffic(traffic: Any) -> None:
    raises_naming("tests[hero].traffic")(lambda: a_test(traffic=traffic))


@pytest.mark.parametrize("traffic", [0, 0.0, 0.5, 1, 1.0])
def test_good_traffic(traffic: float) -> None:
    assert a_test(traffic=traffic).traffic == traffic


@pytest.mark.parametrize("status", ["live", "RUNNING", "", None])
def test_bad_status(status: Any) -> None:
    raises_naming("tests[hero].status")(lambda: a_test(status=status))


def test_winner_not_a_variant() -> None:
    raises_naming("tests[hero].winner", "'c'")(lambda: a_test(status="stopped", winner="c"))
    assert a_test(status="stopped", winner="b").winner == "b"


@pytest.mark.parametrize("gap", [timedelta(0), timedelta(seconds=-1), timedelta(days=-3)])
def test_ends_at_not_after_starts_at(gap: timedelta) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    raises_naming("tests[hero].ends_at")(lambda: a_test(starts_at=start, ends_at=start + gap))


def test_naive_schedule_is_taken_as_utc_and_compared_with_aware() -> None:
    naive_start = datetime(2030, 1, 1, 12, 0)
    # 13:00+02:00 is 11:00 UTC: before the (UTC) start.
    aware_end = datetime(2030, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=2)))
    raises_naming("ends_at")(lambda: a_test(starts_at=naive_start, ends_at=aware_end))
    test = a_test(starts_at=naive_start)
    assert test.starts_at == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_schedule_values_must_be_datetimes() -> None:
    raises_naming("tests[hero].starts_at")(lambda: a_test(starts_at="2030-01-01"))


def test_is_running_respects_schedule_and_status() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=1)
    test = a_test(starts_at=start, ends_at=end)
    assert not test.is_running(start - timedelta(seconds=1))
    assert test.is_running(start)
    assert test.is_running(end - timedelta(seconds=1))
    assert not test.is_running(end)
    assert not a_test(status="paused").is_running(start)


@pytest.mark.parametrize("pages", ["/", ["landing"], [3]])
def test_bad_pages(pages: Any) -> None:
    raises_naming("tests[hero].pages")(lambda: a_test(pages=pages))


def test_unknown_setting_is_a_type_error_in_python() -> None:
    # (and mypy --strict reports it before anything runs)
    with pytest.raises(TypeError, match="cookie_nmae"):
        Optibase(tests=[a_test()], cookie_nmae="x")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cookie_max_age", 0),
        ("cookie_max_age", -5),
        ("cookie_max_age", "10"),
        ("cookie_max_age", True),
        ("flush_interval", 0),
        ("max_batch_events", 0),
        ("cookie_secure", "yes"),
        ("inject_script", 1),
    ],
)
def test_bad_tunable_names_it(name: str, value: Any) -> None:
    raises_naming(name)(lambda: settings_for(**{name: value}))


def test_collector_budgets_default_take_a_pair_or_none() -> None:
    s = settings_for()
    assert (s.collector_visitor_budget, s.collector_ip_budget) == ((20, 1.0), (500, 20.0))
    s = settings_for(collector_visitor_budget=[5, 2], collector_ip_budget=None)
    assert s.collector_visitor_budget == (5, 2.0) and isinstance(
        s.collector_visitor_budget[1], float
    )
    assert s.collector_ip_budget is None


@pytest.mark.parametrize("name", ["collector_visitor_budget", "collector_ip_budget"])
@pytest.mark.parametrize(
    "value", [(0, 1.0), (10, 0), (10, -1.0), (10,), (10, 1.0, 1), (10.5, 1.0), ("10", 1), 10,
              (10, math.inf), (True, 1.0), "10/s"],
)  # fmt: skip
def test_bad_collector_budgets_name_the_field(name: str, value: Any) -> None:
    raises_naming(name)(lambda: settings_for(**{name: value}))


def test_int_accepted_for_float_tunable() -> None:
    s = settings_for(flush_interval=2, dedupe_ttl=60)
    assert s.flush_interval == 2.0 and isinstance(s.flush_interval, float)


@pytest.mark.parametrize("name", ["", "a b", "vid;x", "vid=1", "ví d", "a,b", 'a"b'])
def test_bad_cookie_name(name: str) -> None:
    raises_naming("cookie_name")(lambda: settings_for(cookie_name=name))


def test_good_cookie_name() -> None:
    assert settings_for(cookie_name="my_vid-2").cookie_name == "my_vid-2"


@pytest.mark.parametrize("prefix", ["", "/", "//", "_optibase", "optibase/"])
def test_bad_prefix(prefix: str) -> None:
    raises_naming("prefix")(lambda: settings_for(prefix=prefix))


def test_prefix_trailing_slash_is_trimmed() -> None:
    assert settings_for(prefix="/ab/").prefix == "/ab"


def test_bad_segment_endpoint() -> None:
    raises_naming("segment_endpoint")(lambda: settings_for(segment_endpoint="ftp://x"))
    raises_naming("segment_endpoint")(lambda: settings_for(segment_endpoint="api.segment.io"))


def test_tests_and_conversions_must_be_objects() -> None:
    raises_naming("tests")(lambda: settings_for(tests=[{"id": "hero"}]))
    raises_naming("conversions")(lambda: settings_for(conversions=["buy"]))


@pytest.mark.parametrize("keys", [[""], ["  "], [LONG_KEY, ""]])
def test_empty_secret_key(keys: list[str]) -> None:
    raises_naming("secret_keys")(lambda: settings_for(secret_keys=keys))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"secret_keys": [123]}, "secret_keys"),
        ({"secret_keys": [LONG_KEY, None]}, "secret_keys"),
        ({"segment_region": 5}, "segment_region"),
        ({"segment_endpoint": 5}, "segment_endpoint"),
        ({"segment_write_key": 5, "secret_keys": [LONG_KEY]}, "segment_write_key"),
        ({"flush_interval": math.nan}, "flush_interval"),
        ({"dedupe_ttl": math.nan}, "dedupe_ttl"),
        ({"shutdown_timeout": math.nan}, "shutdown_timeout"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
    ],
)
def test_wrong_types_and_nan_are_config_errors(kwargs: dict[str, Any], field: str) -> None:
    raises_naming(field)(lambda: settings_for(**kwargs))


# -- environment fallbacks ----------------------------------------------------------------


def test_secret_keys_from_env_comma_separated_newest_last() -> None:
    s = settings_for(environ={"OPTIBASE_SECRET_KEYS": f" {OLD} , ,{NEW},"})
    assert s.secret_keys == (OLD, NEW)
    assert not s.development


def test_explicit_secret_keys_beat_env() -> None:
    s = settings_for(secret_keys=[LONG_KEY], environ={"OPTIBASE_SECRET_KEYS": NEW})
    assert s.secret_keys == (LONG_KEY,)
    assert settings_for(secret_keys=OLD).secret_keys == (OLD,)


def test_write_key_and_region_from_env() -> None:
    env = {
        "OPTIBASE_SECRET_KEYS": LONG_KEY,
        "OPTIBASE_SEGMENT_WRITE_KEY": "wk-env",
        "OPTIBASE_SEGMENT_REGION": "EU",
    }
    s = settings_for(environ=env)
    assert s.segment_write_key == "wk-env"
    assert s.segment_region == "eu"
    assert s.segment_base_url == "https://events.eu1.segmentapis.com"
    assert not s.development
    # explicit arguments win over the environment
    s = settings_for(environ=env, segment_write_key="wk-arg", segment_region="us")
    assert (s.segment_write_key, s.segment_region) == ("wk-arg", "us")


def test_optibase_reads_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPTIBASE_SECRET_KEYS", f"{OLD},{NEW}")
    monkeypatch.setenv("OPTIBASE_SEGMENT_WRITE_KEY", "wk")
    monkeypatch.setenv("OPTIBASE_SEGMENT_REGION", "eu")
    ob = Optibase(tests=[a_test()], events_path=tmp_path / "e.jsonl")
    assert ob.settings.secret_keys == (OLD, NEW)
    assert ob.settings.segment_write_key == "wk"
    assert ob.settings.segment_base_url == SEGMENT_BASE_URLS["eu"]
    assert not ob.settings.development
    # signs with the newest key: a codec knowing only "second" verifies its tokens
    token = CookieCodec(ob.settings.signing_keys).encode("6f1c6a38-0d5e-4b8e-9a3e-2b7f0e3c1d2a", {})
    assert CookieCodec([NEW]).decode(token) is not None
    assert CookieCodec([OLD]).decode(token) is None


# -- development mode ---------------------------------------------------------------------


def test_development_mode(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.WARNING, logger="optibase_edge"):
        ob = Optibase(tests=[a_test()], events_path=tmp_path / "e.jsonl")
    assert ob.settings.development
    assert ob.settings.segment_write_key is None
    assert ob.settings.secret_keys == ()
    assert len(ob.settings.signing_keys) == 1 and len(ob.settings.signing_keys[0]) >= 32
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("development" in r.getMessage() for r in warnings)
    # the key is ephemeral: another instance has another key, so cookies do not carry over
    other = Optibase(tests=[a_test()], events_path=tmp_path / "e.jsonl")
    assert other.settings.signing_keys != ob.settings.signing_keys
    token = CookieCodec(ob.settings.signing_keys).encode(
        "6f1c6a38-0d5e-4b8e-9a3e-2b7f0e3c1d2a", {"hero": "a"}
    )
    assert CookieCodec(ob.settings.signing_keys).decode(token) is not None
    assert CookieCodec(other.settings.signing_keys).decode(token) is None


def test_no_development_warning_when_configured(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="optibase_edge"):
        ob = Optibase(tests=[a_test()], secret_keys=[LONG_KEY], segment_write_key="wk")
    assert not ob.settings.development
    assert not [r for r in caplog.records if "development" in r.getMessage()]


def test_secret_key_without_write_key_is_not_development_but_writes_jsonl() -> None:
    s = settings_for(secret_keys=[LONG_KEY])
    assert not s.development
    assert s.segment_write_key is None


# -- region -> base URL -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "url"),
    [
        (None, "https://api.segment.io"),
        ("us", "https://api.segment.io"),
        ("US", "https://api.segment.io"),
        ("eu", "https://events.eu1.segmentapis.com"),
    ],
)
def test_region_base_url(region: str | None, url: str) -> None:
    assert settings_for(segment_region=region).segment_base_url == url


def test_endpoint_override() -> None:
    s = settings_for(segment_region="eu", segment_endpoint="http://127.0.0.1:9010/")
    assert s.segment_base_url == "http://127.0.0.1:9010"


# -- TOML ---------------------------------------------------------------------------------

TOML = """
secret_keys = ["old-key-0123456789abcdef0123456789", "new-key-0123456789abcdef0123456789"]
segment_write_key = "wk-toml"
segment_region = "eu"
cookie_name = "ob_vid"
prefix = "/_exp"
flush_interval = 1

[[tests]]
id = "hero"
pages = ["/", "/landing/*"]
traffic = 0.5
seed = "s1"
starts_at = 2030-01-01T00:00:00Z

  [[tests.variants]]
  id = "control"
  name = "Control"

  [[tests.variants]]
  id = "bold"
  weight = 3

[[tests]]
id = "cta"
variants = ["blue", "green", "red"]
status = "stopped"
winner = "green"

[[conversions]]
id = "signup"
type = "CLICK"
selector = "#signup"
one_per_visitor = true

[[conversions]]
id = "pricing"
type = "PAGE_VIEW"
url = "/pricing"

[[conversions]]
id = "purchase"
type = "PROGRAMMATIC"
"""


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(TOML, encoding="utf-8")
    ob = Optibase.from_file(path, events_path=tmp_path / "e.jsonl")
    s = ob.settings
    assert [t.id for t in s.tests] == ["hero", "cta"]
    hero, cta = s.tests
    assert [(v.id, v.weight, v.name) for v in hero.variants] == [
        ("control", 1.0, "Control"),
        ("bold", 3, None),
    ]
    assert hero.pages == ("/", "/landing/*")
    assert hero.traffic == 0.5 and hero.seed == "s1"
    assert hero.starts_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert [v.id for v in cta.variants] == ["blue", "green", "red"]
    assert (cta.status, cta.winner) == ("stopped", "green")
    assert [(c.id, c.type) for c in s.conversions] == [
        ("signup", ConversionType.CLICK),
        ("pricing", ConversionType.PAGE_VIEW),
        ("purchase", ConversionType.PROGRAMMATIC),
    ]
    assert s.conversions[0].one_per_visitor and s.conversions[0].selector == "#signup"
    assert s.conversions[1].url == "/pricing"
    assert s.secret_keys == (
        "old-key-0123456789abcdef0123456789",
        "new-key-0123456789abcdef0123456789",
    )
    assert s.segment_write_key == "wk-toml"
    assert s.segment_base_url == "https://events.eu1.segmentapis.com"
    assert (s.cookie_name, s.prefix, s.flush_interval) == ("ob_vid", "/_exp", 1.0)


def test_from_file_reads_a_budget_as_an_array(tmp_path: Path) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text("collector_visitor_budget = [10, 0.5]\n", encoding="utf-8")
    ob = Optibase.from_file(path, events_path=tmp_path / "e.jsonl")
    assert ob.settings.collector_visitor_budget == (10, 0.5)


def test_from_file_overrides_win(tmp_path: Path) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(TOML, encoding="utf-8")
    ob = Optibase.from_file(path, segment_region="us", events_path=tmp_path / "e.jsonl")
    assert ob.settings.segment_base_url == "https://api.segment.io"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("tests = [\n", "not valid TOML"),
        ('[[tests]]\nid = "t"\nvariants = ["a"]\n', "tests[t].variants"),
        ('[[tests]]\nid = "t"\nvariants = ["a", "b"]\ncolour = 1\n', "tests[t]"),
        ('[[tests]]\nid = "t"\nvariants = ["a", {id = "b", weight = 0}]\n', "weight"),
        ('[[tests]]\nid = "t"\nvariants = ["a", {id = "b", colour = 1}]\n', "variants[1]"),
        ('[[tests]]\nid = "t"\nvariants = "ab"\n', "tests[t].variants"),
        ('[[conversions]]\nid = "c"\ntype = "CLICK"\n', "conversions[c].selector"),
        ('[[conversions]]\nid = "c"\ntype = "CLICK"\nselector = "#a"\nx = 1\n', "conversions[c]"),
        ("tests = [1]\n", "tests[0]"),
        ('segment_region = "ap"\n', "segment_region"),
        ("speed = 3\n", "speed"),
    ],
)
def test_from_file_bad_content(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(body, encoding="utf-8")
    raises_naming(fragment)(lambda: Optibase.from_file(path, events_path=tmp_path / "e.jsonl"))


@pytest.mark.parametrize(
    ("body", "where", "typo", "meant"),
    [
        (
            '[[conversions]]\nid = "signup"\ntype = "CLICK"\nselector = "#s"\n'
            "one_per_vistor = true\n",
            "conversions[signup]",
            "one_per_vistor",
            "one_per_visitor",
        ),
        ('[[tests]]\nid = "hero"\nvariants = ["a", "b"]\ntrafic = 0.5\n', "tests[hero]", "trafic",
         "traffic"),
        ('[[tests]]\nid = "hero"\n[[tests.variants]]\nid = "a"\nwieght = 2\n',
         "tests[hero].variants[0]", "wieght", "weight"),
        ('cookie_nmae = "x"\n', "optibase.toml", "cookie_nmae", "cookie_name"),
    ],
)  # fmt: skip
def test_a_misspelled_toml_field_names_where_and_suggests(
    tmp_path: Path, body: str, where: str, typo: str, meant: str
) -> None:
    path = tmp_path / "optibase.toml"
    path.write_text(body, encoding="utf-8")
    message = raises_naming(where, repr(typo), f"did you mean {meant!r}")(
        lambda: Optibase.from_file(path)
    )
    assert "unexpected keyword" not in message


def test_every_setting_is_a_typed_keyword_of_optibase_with_the_same_default() -> None:
    parameters = inspect.signature(Optibase).parameters
    for spec in dataclasses.fields(Settings):
        if not spec.init:
            continue
        parameter = parameters[spec.name]
        assert parameter.annotation is not inspect.Parameter.empty, spec.name
        environment = {"secret_keys", "segment_write_key", "segment_region", "events_path"}
        if spec.name not in environment:  # None there means "from the environment"
            assert parameter.default == spec.default, spec.name


def test_from_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    raises_naming("nope.toml")(lambda: Optibase.from_file(missing))


def test_test_class_is_not_collected_by_pytest() -> None:
    assert Test.__test__ is False


# -- spool_path: a file or a Redis list -------------------------------------------------


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache.internal:6380/2", "REDIS://h"]
)
def test_spool_path_takes_a_redis_url(url: str) -> None:
    spool = Optibase(spool_path=url).settings.spool_path
    assert spool == RedisUrl(url) and "pw" not in repr(spool)


def test_spool_path_takes_a_path_from_toml_too(tmp_path: Path) -> None:
    config = tmp_path / "optibase.toml"
    config.write_text('spool_path = "redis://127.0.0.1/1"\n', encoding="utf-8")
    assert Optibase.from_file(config).settings.spool_path == RedisUrl("redis://127.0.0.1/1")
    assert Optibase(spool_path=str(tmp_path / "s")).settings.spool_path == tmp_path / "s"


@pytest.mark.parametrize(
    "url", ["redis://", "redis://:6379/0", "redis://h:port/0", "rediss://h/zero", "redis://h/1/2"]
)
def test_a_bad_redis_url_is_refused_naming_spool_path_not_taken_as_a_file(url: str) -> None:
    raises_naming("spool_path", "Redis URL")(lambda: Optibase(spool_path=url))
