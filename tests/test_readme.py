"""The README's quick start runs as written, in development mode, and records what it says."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start_source() -> str:
    text = README.read_text(encoding="utf-8")
    after = text.split("Save this as `app.py`:", 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match is not None, "the README's app.py block is gone"
    return match.group(1)


def test_the_quick_start_app_works_in_development_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SECRET_KEYS", "SEGMENT_WRITE_KEY", "SEGMENT_REGION", "EVENTS_PATH"):
        monkeypatch.delenv(f"OPTIBASE_{name}", raising=False)
    monkeypatch.chdir(tmp_path)  # events go to ./optibase-events.jsonl, as the README says
    (tmp_path / "app.py").write_text(quick_start_source(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("readme_app", tmp_path / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    with TestClient(module.app) as client:
        first = client.get("/").json()
        again = client.get("/").json()
        assert client.post("/buy").json() == {"ok": True}
    assert first == again and first["headline"] in ("Welcome", "Ship faster")

    lines = (tmp_path / "optibase-events.jsonl").read_text().splitlines()
    calls = [(m["type"], m.get("event"), m["anonymousId"]) for m in map(json.loads, lines)]
    visitor = first["visitor"]
    assert calls == [
        ("identify", None, visitor),
        ("track", "Experiment Viewed", visitor),
        ("track", "Conversion Triggered", visitor),
    ]


SECURITY = README.parent / "SECURITY.md"


def test_every_test_security_md_names_exists() -> None:
    """Each line of the threat model names its proof: the proofs must be real tests."""
    text = SECURITY.read_text(encoding="utf-8")
    # `test_file.py::test_name` sets the file; a following `::test_name` reuses it.
    named: list[tuple[str, str]] = []
    for file, test in re.findall(r"`(?:(test_\w+\.py))?::(test_\w+)`", text):
        current = file or named[-1][0]
        named.append((current, test))
    assert len(named) >= 20, "SECURITY.md should name its tests"
    tests_dir = README.parent / "tests"
    for file, test in named:
        source = (tests_dir / file).read_text(encoding="utf-8")
        assert re.search(rf"^(?:async )?def {test}\(", source, re.MULTILINE), f"{file}::{test}"
