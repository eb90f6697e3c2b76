"""Server-side Optibase-style A/B testing for Starlette and FastAPI, reported to Segment."""

from ._optibase import Optibase, Visitor
from ._version import __version__
from .config import ConfigError, Conversion, ConversionType, Test, Variant
from .dedupe import DedupeStore, MemoryStore
from .middleware import OptibaseMiddleware, get_visitor
from .stores.redis import RedisStore

__all__ = [
    "ConfigError",
    "Conversion",
    "ConversionType",
    "DedupeStore",
    "MemoryStore",
    "Optibase",
    "OptibaseMiddleware",
    "RedisStore",
    "Test",
    "Variant",
    "Visitor",
    "__version__",
    "get_visitor",
]
