"""Storage backends behind one small protocol."""

from .base import Backend, BackendError, LockingBackend, PartialBackendError
from .memory import MemoryBackend
from .redis import RedisBackend
from .tiered import TieredBackend

__all__ = [
    "Backend",
    "BackendError",
    "LockingBackend",
    "MemoryBackend",
    "PartialBackendError",
    "RedisBackend",
    "TieredBackend",
]
