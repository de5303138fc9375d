"""Storage backends behind one small protocol."""

from .base import Backend, BackendError, CountingBackend, LockingBackend, PartialBackendError
from .memory import MemoryBackend
from .redis import RedisBackend
from .tiered import TieredBackend

__all__ = [
    "Backend",
    "BackendError",
    "CountingBackend",
    "LockingBackend",
    "MemoryBackend",
    "PartialBackendError",
    "RedisBackend",
    "TieredBackend",
]
