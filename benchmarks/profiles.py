"""The cProfile runs' section of the report: self time by area, our functions, and the top functions."""

from __future__ import annotations

import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

# The areas self time is charged to, by the first of these names in a file's path.
LIBRARIES = (
    *("redis", "hiredis", "starlette", "fastapi", "uvicorn", "pydantic", "anyio", "asyncio", "uvloop"),
    *(
        "httptools",
        "h11",
        "fastapi_cache",
        "cashews",
        "hishel",
        "redis_fastapi",
        "sklearn",
        "numpy",
        "orjson",
    ),
)
OURS = "redis_cache_middleware/"


def _area(filename: str) -> str:
    if OURS in filename:
        return "ours: " + filename.split(OURS, 1)[1]
    if "benchmarks/" in filename:
        return "benchmark harness"
    parts = filename.replace("\\", "/").split("/")
    for library in LIBRARIES:
        if library in parts:
            return library
    return "other"


def profile_split(path: Path, requests: int) -> dict[str, Any]:
    """Self time by area (C functions charged to their Python callers) and our functions, µs per request."""
    stats = pstats.Stats(str(path))
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values())
    areas: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tt, _, callers) in entries.items():
        if filename != "~" or not callers:
            areas[_area(filename)] += tt
            continue
        called = sum(c[2] for c in callers.values()) or 1.0
        for (caller_file, _, _), caller in callers.items():
            areas[_area(caller_file)] += tt * caller[2] / called
    ours = []
    for (filename, line, function), (_, nc, tt, ct, _) in entries.items():
        if OURS in filename:
            short = filename.split(OURS, 1)[1]
            ours.append(
                (f"{short}:{line} {function}", nc / requests, tt * 1e6 / requests, ct * 1e6 / requests)
            )
    ours.sort(key=lambda row: -row[3])
    per_request = total * 1e6 / requests
    return {
        "total_us_per_request": per_request,
        "areas": sorted(((a, t * 1e6 / requests) for a, t in areas.items()), key=lambda x: -x[1]),
        "ours": ours,
    }


def profile_text(path: Path, out: Path, top: int = 30) -> None:
    """pstats' own listing, by cumulative and by self time, next to the .prof file."""
    import io

    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer).strip_dirs()
    buffer.write(f"=== top {top} by cumulative time ===\n")
    stats.sort_stats("cumulative").print_stats(top)
    buffer.write(f"\n=== top {top} by self time (tottime) ===\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write_text(buffer.getvalue())


def _top(path: Path, key: str, count: int, requests: int) -> list[str]:
    stats = pstats.Stats(str(path))
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    index = 3 if key == "cumulative" else 2
    rows = sorted(entries.items(), key=lambda item: -item[1][index])[:count]
    out = []
    for (filename, line, function), (_, nc, tt, ct, _) in rows:
        where = "built-in" if filename == "~" else f"{_short(filename)}:{line}"
        out.append(
            f"| `{function}` | {where} | {nc / requests:.2f} | {tt * 1e6 / requests:.1f} "
            f"| {ct * 1e6 / requests:.1f} |"
        )
    return out


def _short(filename: str) -> str:
    if OURS in filename:
        return OURS + filename.split(OURS, 1)[1]
    marker = "site-packages/"
    if marker in filename:
        return filename.split(marker, 1)[1]
    return "/".join(filename.split("/")[-2:])


def profile_section(data: dict[str, Any]) -> list[str]:
    runs = [
        r for r in data["runs"] if r["profile"] and "rps" in r["result"] and r["result"].get("profile_file")
    ]
    if not runs:
        return []
    lines = [
        "### Profiles (cProfile on the server's event loop during the window; µs per request)",
        "",
        "cProfile adds its own cost to every Python call, so absolute numbers are inflated (compare",
        "`profiled µs/req` with the unprofiled `server CPU µs/req` above); the shares are what matter.",
    ]
    for run in runs:
        path = Path(run["result"]["profile_file"])
        requests = run["result"]["requests"]
        if not path.exists() or not requests:
            continue
        profile_text(path, path.with_suffix(".txt"))
        split = profile_split(path, requests)
        lines += [
            "",
            f"#### {run['scenario']}: {run['result']['rps']:,.0f} req/s under the profiler, "
            f"{split['total_us_per_request']:.0f} profiled µs/req",
            "",
            "Self time by area (C functions such as `blake2b` or `orjson.loads` charged to their caller):",
            "",
            "| area | µs/req | share |",
            "| --- | ---: | ---: |",
        ]
        total = split["total_us_per_request"] or 1.0
        for area, us in split["areas"][:14]:
            lines.append(f"| {area} | {us:.1f} | {us / total:.0%} |")
        lines += [
            "",
            "Our functions (calls/req, self µs/req, cumulative µs/req):",
            "",
            "| function | calls/req | self µs | cumulative µs |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, calls, tt, ct in split["ours"][:20]:
            lines.append(f"| `{name}` | {calls:.2f} | {tt:.1f} | {ct:.1f} |")
        for key in ("cumulative", "tottime"):
            lines += [
                "",
                f"Top 15 by {key}:",
                "",
                "| function | where | calls/req | self µs | cumulative µs |",
                "| --- | --- | ---: | ---: | ---: |",
                *_top(path, key, 15, requests),
            ]
    return lines
