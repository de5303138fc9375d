"""Run work that must outlive its caller (a computation others wait for, a background refresh), on any
loop.

AnyIO's shielded cancel scopes stop every cancellation under trio, and every AnyIO cancellation under
asyncio; but an asyncio server may also cancel a request's task natively (`Task.cancel()`), which no cancel
scope can stop. So under asyncio the work runs in a task of its own that the caller awaits through
`asyncio.shield`; under any other AnyIO backend, in a shielded scope. This is the one place that knows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

logger = logging.getLogger(__name__)
_running: set[asyncio.Task[None]] = set()


def on_asyncio() -> bool:
    """Whether the current task runs on an asyncio event loop (rather than trio)."""
    token = anyio.lowlevel.current_token()
    return isinstance(getattr(token, "native_token", token), asyncio.AbstractEventLoop)


async def run_detached(work: Callable[[], Awaitable[None]]) -> None:
    """Await `work()`; if the caller is cancelled meanwhile, the work still runs to its end."""
    if not on_asyncio():
        with anyio.CancelScope(shield=True):
            await work()
        return

    async def wrapped() -> None:
        await work()

    task = asyncio.ensure_future(wrapped())
    _running.add(task)
    task.add_done_callback(_finished)
    await asyncio.shield(task)


async def after_response(work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` that no client waits for (a background refresh): under asyncio in a task of its own, so
    the request ends now; elsewhere in the request's own task, after its response, as Starlette runs
    background tasks."""
    if not on_asyncio():
        await work()
        return

    async def wrapped() -> None:
        await work()

    task = asyncio.ensure_future(wrapped())
    _running.add(task)
    task.add_done_callback(_finished)


async def wait_for_background() -> None:
    """Wait until every background task started by `after_response` has ended."""
    while _running:
        await asyncio.gather(*_running, return_exceptions=True)


def _finished(task: asyncio.Task[None]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.debug("detached computation failed: %r", task.exception())
