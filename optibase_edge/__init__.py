"""Server-side Optibase-style A/B testing for Starlette and FastAPI, reported to Segment."""

from ._config import ConfigError, Conversion, ConversionType, Test, Variant
from ._delivery.redis_store import RedisStore
from ._delivery.stores import DedupeStore, MemoryStore
from ._delivery.transports import (
    Batch,
    JsonLinesTransport,
    MockTransport,
    Outcome,
    SegmentTransport,
    Transport,
)
from ._middleware import OptibaseMiddleware, get_visitor
from ._optibase import Optibase
from ._proxy import ReverseProxy
from ._results import experiment_results
from ._version import __version__
from ._visitor import Visitor

__all__ = [
    "Batch",
    "ConfigError",
    "Conversion",
    "ConversionType",
    "DedupeStore",
    "JsonLinesTransport",
    "MemoryStore",
    "MockTransport",
    "Optibase",
    "OptibaseMiddleware",
    "Outcome",
    "RedisStore",
    "ReverseProxy",
    "SegmentTransport",
    "Test",
    "Transport",
    "Variant",
    "Visitor",
    "__version__",
    "experiment_results",
    "get_visitor",
]

# Public names report the public module, as httpx's do (tracebacks, docs, repr).
for _name in __all__:
    if _name != "__version__":
        globals()[_name].__module__ = "optibase_edge"
del _name
