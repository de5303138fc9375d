"""One benchmark server: `python -m benchmarks.server SCENARIO --port P --redis-url URL --stats FILE`.

uvicorn, one worker, access log off, uvloop and httptools when installed. The runner pins it to core 0.
SIGUSR1 marks the start of the measured window (GC counters reset, profiler on with `--profile`);
SIGUSR2 its end (profile and stats written to disk). SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib.util
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import uvicorn  # noqa: E402

from benchmarks.apps import SCENARIOS, build  # noqa: E402


def event_loop_and_parser() -> tuple[str, str]:
    """uvloop and httptools when installed (uvicorn's `standard` set), else asyncio and h11."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


class GcPauses:
    """Records every collection's duration by generation, through `gc.callbacks`."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def reset(self) -> None:
        for pauses in self.pauses.values():
            pauses.clear()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for generation, pauses in self.pauses.items():
            out[f"gen{generation}"] = {
                "count": len(pauses),
                "total_ms": round(sum(pauses) * 1000, 3),
                "max_ms": round(max(pauses, default=0.0) * 1000, 3),
            }
        return out


class BenchServer(uvicorn.Server):
    """uvicorn.Server with the measurement-window signals and the optional `gc.freeze()` after start-up."""

    def __init__(self, config: uvicorn.Config, args: argparse.Namespace) -> None:
        super().__init__(config)
        self.args = args
        self.gc_pauses = GcPauses()
        self.profiler = cProfile.Profile() if args.profile else None
        self.stats: dict[str, Any] = {"scenario": args.scenario, "pid": os.getpid()}
        self.window_started = 0.0
        self.cache: Any = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Starlette builds its middleware stack on the first request; build it now, before any freeze.
        app = self.config.loaded_app
        while app is not None and not hasattr(app, "build_middleware_stack"):
            app = getattr(app, "app", None)
        if app is not None and app.middleware_stack is None:
            app.middleware_stack = app.build_middleware_stack()
        self.cache = _find_cache(self.config.loaded_app)
        gc.collect()
        self.stats["tracked_objects"] = len(gc.get_objects())
        if self.args.gc_freeze:
            gc.freeze()
        self.stats["frozen_objects"] = gc.get_freeze_count()
        self.stats["gc_thresholds"] = gc.get_threshold()
        gc.callbacks.append(self.gc_pauses)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.begin_window)
        loop.add_signal_handler(signal.SIGUSR2, self.end_window)

    def begin_window(self) -> None:
        self.gc_pauses.reset()
        self.window_started = time.perf_counter()
        self.stats["cpu_at_start"] = time.process_time()
        if self.cache is not None:
            self.stats["cache_at_start"] = json.loads(json.dumps(self.cache.stats(), default=str))
        if self.profiler is not None:
            self.profiler.enable()

    def end_window(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(self.args.profile)
        window = time.perf_counter() - self.window_started
        self.stats["window_s"] = round(window, 3)
        self.stats["cpu_s"] = round(time.process_time() - self.stats.pop("cpu_at_start", 0.0), 3)
        self.stats["gc"] = self.gc_pauses.summary()
        self.stats["tracked_objects_at_end"] = len(gc.get_objects())
        if self.cache is not None:
            self.stats["cache"] = json.loads(json.dumps(self.cache.stats(), default=str))
            backend: Any = getattr(self.cache, "backend", None)
            if hasattr(backend, "stats"):
                self.stats["backend"] = backend.stats()
        tmp = Path(str(self.args.stats) + ".tmp")
        tmp.write_text(json.dumps(self.stats, indent=1))
        tmp.replace(self.args.stats)


def _find_cache(app: Any) -> Any:
    """Our CacheMiddleware inside the app's middleware chain, if there is one."""
    from redis_cache_middleware import CacheMiddleware

    seen = 0
    while app is not None and seen < 50:
        if isinstance(app, CacheMiddleware):
            return app
        app = getattr(app, "middleware_stack", None) or getattr(app, "app", None)
        seen += 1
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--stats", type=Path, required=True, help="JSON written at the end of the window")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once the app is started")
    parser.add_argument("--profile", type=Path, help="cProfile the measured window into this file")
    args = parser.parse_args(argv)

    app = build(args.scenario, args.redis_url)
    loop, http = event_loop_and_parser()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        loop=loop,
        http=http,
        access_log=False,
        log_level="warning",
        lifespan="on",
        workers=1,
    )
    server = BenchServer(config, args)
    server.stats.update(loop=loop, http=http, python=sys.version.split()[0], gc_freeze=args.gc_freeze)
    server.run()


if __name__ == "__main__":
    main()
