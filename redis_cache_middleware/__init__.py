"""A Redis response cache for Starlette/FastAPI apps, added with one `add_middleware` call."""

from .backends import Backend, BackendError, MemoryBackend, RedisBackend, TieredBackend
from .batch import BatchRows, Row
from .breaker import CircuitBreaker
from .middleware import CacheMiddleware, MetricsEndpoint
from .rules import CacheRule

__all__ = [
    "Backend",
    "BackendError",
    "BatchRows",
    "CacheMiddleware",
    "CacheRule",
    "CircuitBreaker",
    "MemoryBackend",
    "MetricsEndpoint",
    "RedisBackend",
    "Row",
    "TieredBackend",
]
__version__ = "0.1.0"
