"""Storage backends behind one small protocol."""

from .base import Backend, BackendError
from .memory import MemoryBackend
from .redis import RedisBackend

__all__ = ["Backend", "BackendError", "MemoryBackend", "RedisBackend"]
