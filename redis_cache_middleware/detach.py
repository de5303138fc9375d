"""Run work that may outlive its caller (a computation others wait for, a background refresh), on any
loop.

AnyIO offers no task that outlives its caller's scope, and an asyncio server may cancel a request's task
natively (`Task.cancel()`), which no AnyIO cancel scope can stop: so under asyncio the work runs in a task
of its own; under trio it stays in the request's task (scoped cancellation is the client's verdict, and it
is honoured). This is the one place that knows asyncio from trio.
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


async def run_detached(work: Callable[[], Awaitable[None]], needed: Callable[[], bool]) -> None:
    """Await `work()`. If the caller is cancelled meanwhile, the work goes on while `needed()` says someone
    can still use it (waiters, or a response being stored), and is cancelled otherwise.

    Under asyncio the work runs in a task of its own, awaited through `asyncio.shield`, since a server may
    cancel the request's task natively. Under trio, cancellation is always scoped and a request's scope is
    its client's: the work is simply cancelled with it, and waiters compute for themselves.
    """
    if not on_asyncio():
        await work()
        return
    task = _start(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not needed():
            task.cancel()
        raise


async def after_response(work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` that no client waits for (a background refresh): under asyncio in a task of its own, so
    the request ends now; elsewhere in the request's own task, after its response, as Starlette runs
    background tasks."""
    if not on_asyncio():
        await work()
        return
    _start(work)


def _start(work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """`work()` as a task of its own, kept referenced until it ends (its failure logged, never lost)."""

    async def wrapped() -> None:
        await work()

    task = asyncio.ensure_future(wrapped())
    _running.add(task)
    task.add_done_callback(_finished)
    return task


async def wait_for_background() -> None:
    """Wait until every background task started by `after_response` has ended."""
    while _running:
        await asyncio.gather(*_running, return_exceptions=True)


def _finished(task: asyncio.Task[None]) -> None:
    _running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.debug("detached computation failed: %r", task.exception())
