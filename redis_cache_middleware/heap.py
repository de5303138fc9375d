"""The start-up heap frozen out of the garbage collector's reach, at the end of lifespan start-up.

The switch for tail latency (docs/benchmarks.md, "The tail"): a model, numpy and FastAPI leave ~140,000
objects that every full collection walks (~100 ms); under load, requests waiting on I/O trigger such
collections. `gc.freeze()` once start-up is complete moves them to the permanent generation, where no
collection looks again. Trade-off: a reference cycle among them that becomes garbage is never collected.
"""

from __future__ import annotations

import gc
import logging

from starlette.types import Message, Send

logger = logging.getLogger(__name__)


def freezing_startup(send: Send) -> Send:
    """`send` for a lifespan scope that freezes the heap just before start-up is reported complete."""

    async def send_after_freezing(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            gc.collect()
            gc.freeze()
            logger.info(
                "froze %d start-up objects out of the garbage collector's reach",
                gc.get_freeze_count(),
                extra={"event": "gc_freeze", "frozen": gc.get_freeze_count()},
            )
        await send(message)

    return send_after_freezing
