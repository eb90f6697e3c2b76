"""The shape of the house: which module may import which, and what is public.

Arrows point from the shell to the engine to the core, and from the engine to
delivery to the core; never back. The core imports neither Starlette nor
httpx2. Read from the source (imports under ``TYPE_CHECKING`` excepted), so a
wrong arrow fails here before it tangles anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import optibase_edge
from optibase_edge import Optibase, Visitor

PACKAGE = Path(optibase_edge.__file__).parent
CORE = {
    "_config", "_settings", "_toml", "_cookie", "_assignment", "_pages", "_events",
    "_segment", "_screening", "_injection", "_seen", "_version", "_hosts", "_caching", "_proxies",
    "_budgets", "_results", "_statistics", "_html", "_blocks",
}  # fmt: skip
ENGINE = {"_optibase", "_visitor", "_preview"}
SHELL = {"_middleware", "_endpoints", "_client_script", "_cli", "_report"}
MAY_IMPORT = {
    "core": {"core"},
    "delivery": {"core", "delivery"},
    "engine": {"core", "delivery", "engine"},
    "shell": {"core", "engine", "shell"},
}
FRAMEWORKS = {"starlette", "httpx2", "redis"}


def layer(module: str) -> str:
    """The layer of a module named relative to the package (``_delivery.queue``)."""
    head = module.split(".")[0]
    if head == "_delivery":
        return "delivery"
    for name, members in (("core", CORE), ("engine", ENGINE), ("shell", SHELL)):
        if head in members:
            return name
    raise AssertionError(f"{module} belongs to no layer: add it to one")


def runtime_imports(path: Path) -> tuple[set[str], set[str]]:
    """What *path* imports when it runs: package modules (as ``_x.y``), and other top names."""
    module = path.relative_to(PACKAGE).with_suffix("").as_posix().split("/")
    inside: set[str] = set()
    outside: set[str] = set()
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            outside.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module is not None
            outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = module[: len(module) - node.level]  # the package the dots lead to
            if node.module:
                inside.add(".".join([*base, node.module]))
            else:
                inside.update(".".join([*base, alias.name]) for alias in node.names)
    return inside, outside


def modules() -> dict[str, Path]:
    return {
        path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", "."): path
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }


def test_every_arrow_points_the_right_way() -> None:
    wrong = []
    for module, path in modules().items():
        for target in runtime_imports(path)[0]:
            if target == "_delivery":
                target = "_delivery.sender"  # the subpackage itself holds no code
            if layer(target) not in MAY_IMPORT[layer(module)]:
                wrong.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    assert not wrong, wrong


def test_the_core_uses_no_framework_and_no_network() -> None:
    for module, path in modules().items():
        if layer(module) == "core":
            assert not runtime_imports(path)[1] & FRAMEWORKS, module


def test_no_import_cycles() -> None:
    graph = {
        module: {t for t in runtime_imports(path)[0] if t in modules()}
        for module, path in modules().items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        assert module not in visiting, " -> ".join([*visiting, module])
        if module in done:
            return
        visiting.append(module)
        for target in graph[module]:
            visit(target)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_the_public_surface_is_what_the_readme_documents() -> None:
    assert set(optibase_edge.__all__) == {
        "Batch", "ConfigError", "Conversion", "ConversionType", "DedupeStore",
        "JsonLinesTransport", "MemoryStore", "MockTransport", "Optibase", "OptibaseMiddleware",
        "Outcome", "RedisStore", "SegmentTransport", "Test", "Transport", "Variant", "Visitor",
        "__version__", "experiment_results", "get_visitor",
    }  # fmt: skip
    public = {name for name in dir(optibase_edge) if not name.startswith("_")}
    assert public == set(optibase_edge.__all__) - {"__version__"}
    assert {n for n in dir(Visitor) if not n.startswith("_")} == {
        "id", "user_id", "variant", "active_variants", "convert", "identify",
    }  # fmt: skip
    assert {n for n in dir(Optibase) if not n.startswith("_")} == {
        "from_file", "settings", "convert", "stats", "start", "flush", "aclose",
    }  # fmt: skip
