"""Storage backends behind one small protocol."""

from .base import Backend, BackendError, LockingBackend, PartialBackendError
from .memory import MemoryBackend
from .redis import RedisBackend

__all__ = [
    "Backend",
    "BackendError",
    "LockingBackend",
    "MemoryBackend",
    "PartialBackendError",
    "RedisBackend",
]
