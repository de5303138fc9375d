"""Storage backends behind one small protocol."""

from .base import Backend, BackendError, LockingBackend
from .memory import MemoryBackend
from .redis import RedisBackend

__all__ = ["Backend", "BackendError", "LockingBackend", "MemoryBackend", "RedisBackend"]
