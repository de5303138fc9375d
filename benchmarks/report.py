"""Turn benchmark results into Markdown (table, GC, profile split) and a PNG chart."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import pstats
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.apps import SCENARIOS

PACKAGES = (
    "redis-cache-middleware",
    "starlette",
    "fastapi",
    "pydantic",
    "uvicorn",
    "uvloop",
    "httptools",
    "redis",
    "hiredis",
    "orjson",
    "scikit-learn",
    "numpy",
    "fastapi-cache2",
    "cashews",
    "hishel",
    "matplotlib",
)
LIBRARIES: tuple[str, ...] = (
    "redis",
    "hiredis",
    "starlette",
    "fastapi",
    "uvicorn",
    "pydantic",
    "anyio",
    "asyncio",
    "uvloop",
)
LIBRARIES += ("httptools", "h11", "fastapi_cache", "cashews", "hishel", "sklearn", "numpy", "orjson")
OURS = "redis_cache_middleware/"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine(args: argparse.Namespace, redis_version: str, wrk_version: str | None) -> dict[str, Any]:
    from benchmarks.server import event_loop_and_parser

    loop, http = event_loop_and_parser()
    changed = [line[3:] for line in _git("status", "--porcelain").splitlines() if line[3:].endswith(".py")]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
        "redis_server": redis_version,
        "load_generator": wrk_version or "python fallback (benchmarks/loadgen.py)",
        "uvicorn": f"1 worker, --loop {loop}, --http {http}, access log off",
        "connections": args.connections,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "git": _git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if changed else ""),
        "uncommitted": changed,
        "load_average_at_end": os.getloadavg()[0],
    }


def one_line(label: str, result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"{label}: skipped ({result['skipped']})"
    if "failed" in result:
        return f"{label}: FAILED {result['failed']}"
    warning = f"  WARNING {result['warning']}" if "warning" in result else ""
    return (
        f"{label}: {result['rps']:.0f} req/s, p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
        f"Redis cmds/req {_fmt(result.get('redis_commands_per_request'), 2)}{warning}"
    )


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _main_runs(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in data["runs"] if not r["gc_freeze"] and not r["profile"]]


def _ok(run: dict[str, Any]) -> bool:
    return "rps" in run["result"]


def _by_label(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["label"]: r["result"] for r in data["runs"] if _ok(r)}


def _errors(result: dict[str, Any]) -> int:
    return int(sum(result["errors"].values()))


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    results = _by_label(data)
    base = results.get("no-middleware", {}).get("rps")
    constant = results.get("fastapi-constant", {}).get("rps")
    lines = [
        "## Results",
        "",
        f"{m['date']}; {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; Python {m['python']}; "
        f"uvicorn {m['uvicorn']}; redis-server {m['redis_server']}; load: {m['load_generator']}, "
        f"{m['connections']} connections, {m['warmup_s']:g} s warm-up then {m['duration_s']:g} s measured "
        f"per scenario; code at {m['git']}; whole run {m['total_run_s']:g} s; 1-minute load average "
        f"{m.get('load_average_at_start', 0):.2f} at the start, {m['load_average_at_end']:.2f} at the end.",
        "",
        "| scenario | what runs | req/s | p50 ms | p99 ms | vs no-middleware | vs FastAPI constant "
        "| Redis cmds/req | server CPU µs/req | our cache: hit / miss / bypass | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for run in _main_runs(data):
        result = run["result"]
        name = run["label"]
        description = SCENARIOS[run["scenario"]].description
        if not _ok(run):
            reason = result.get("skipped") or result.get("failed")
            lines.append(f"| {name} | {description} | not run: {reason} | | | | | | | | |")
            continue
        rps = result["rps"]
        server = result.get("server", {})
        cpu_us = server.get("cpu_s", 0) * 1e6 / result["requests"] if result["requests"] else None
        lines.append(
            f"| {name} | {description} | {rps:,.0f} | {result['p50']:.2f} | {result['p99']:.2f} "
            f"| {_ratio(rps, base)} | {_ratio(rps, constant)} "
            f"| {_fmt(result.get('redis_commands_per_request'), 2)} | {_fmt(cpu_us, 0)} "
            f"| {outcomes(server)} | {_errors(result)} |"
        )
    warnings = [f"- {r['label']}: {r['result']['warning']}" for r in data["runs"] if "warning" in r["result"]]
    if warnings:
        lines += ["", "Warnings:", *warnings]
    lines += ["", *gc_section(data), "", *hitpath_section(data), "", *profile_section(data)]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines += ["", f"Packages: {packages}."]
    return "\n".join(lines) + "\n"


def outcomes(server: dict[str, Any]) -> str:
    """Hits, misses and bypasses of our middleware within the window (its stats() before and after)."""
    try:
        totals = []
        for field in ("hit", "miss", "bypass"):
            end = sum(r.get(field, 0) for r in server["cache"]["rules"].values())
            start = sum(r.get(field, 0) for r in server["cache_at_start"]["rules"].values())
            totals.append(end - start)
        opened = (
            server["cache"]["breaker"]["times_opened"] - server["cache_at_start"]["breaker"]["times_opened"]
        )
    except (KeyError, TypeError, AttributeError):
        return "-"
    text = " / ".join(f"{n:,}" for n in totals)
    return text + (f" (breaker opened {opened}x)" if opened else "")


def _ratio(value: float, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def gc_section(data: dict[str, Any]) -> list[str]:
    rows = [r for r in data["runs"] if _ok(r) and not r["profile"]]
    if not rows:
        return []
    lines = [
        "### Garbage collection",
        "",
        "| run | gc.freeze | tracked objects | frozen | p50 ms | p99 ms | p99.9 ms | max ms "
        "| gen2 collections | gen2 max ms | gen2 total ms | gen0+1 total ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in rows:
        result, server = run["result"], run["result"].get("server", {})
        gc = server.get("gc", {})
        gen2 = gc.get("gen2", {})
        young = gc.get("gen0", {}).get("total_ms", 0) + gc.get("gen1", {}).get("total_ms", 0)
        lines.append(
            f"| {run['label']} | {'yes' if run['gc_freeze'] else 'no'} "
            f"| {server.get('tracked_objects', 0):,} "
            f"| {server.get('frozen_objects', 0):,} | {result['p50']:.2f} | {result['p99']:.2f} "
            f"| {result['p999']:.2f} | {result['max']:.2f} | {gen2.get('count', 0)} "
            f"| {gen2.get('max_ms', 0):.1f} | {gen2.get('total_ms', 0):.1f} | {young:.1f} |"
        )
    return lines


def hitpath_section(data: dict[str, Any]) -> list[str]:
    if not data.get("hitpath"):
        return []
    return [
        "### The hit path in-process, unprofiled (benchmarks/hitpath.py; µs per call, best of 5)",
        "",
        data["hitpath"].rstrip("\n"),
    ]


# --- profiles -------------------------------------------------------------------------------------


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
    runs = [r for r in data["runs"] if r["profile"] and _ok(r) and r["result"].get("profile_file")]
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


# --- chart ----------------------------------------------------------------------------------------


def chart(data: dict[str, Any], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -e '.[bench]')")
        return None
    runs = [r for r in _main_runs(data) if _ok(r)]
    extra = [r for r in data["runs"] if r["gc_freeze"] and not r["profile"] and _ok(r)]
    runs = list(reversed(runs + extra))
    if not runs:
        return None
    labels = [r["label"] for r in runs]
    colours = [_colour(r) for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.45 * len(runs) + 2.2), sharey=True)
    rps = [r["result"]["rps"] for r in runs]
    left.barh(labels, rps, color=colours)
    left.set_xscale("log")
    left.set_xlabel("requests/s (log scale, higher is better)")
    for y, value in enumerate(rps):
        left.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    left.set_xlim(right=max(rps) * 3)
    p50 = [r["result"]["p50"] for r in runs]
    p99 = [r["result"]["p99"] for r in runs]
    positions = range(len(runs))
    right.barh([p + 0.2 for p in positions], p50, height=0.4, color="#7fa7d9", label="p50")
    right.barh([p - 0.2 for p in positions], p99, height=0.4, color="#e07b54", label="p99")
    right.set_xscale("log")
    right.set_xlabel("latency, ms (log scale, lower is better)")
    right.legend(loc="lower right")
    from matplotlib.patches import Patch

    kinds = [
        ("#4a7fc1", "our cache"),
        ("#b05050", "no cache"),
        ("#c9b458", "constant baselines"),
        ("#9b9b9b", "other caches"),
    ]
    left.legend(handles=[Patch(color=c, label=t) for c, t in kinds], loc="upper right", fontsize=8)
    m = data["machine"]
    fig.suptitle(
        f"{m['cpu']}, {m['cores']} cores; uvicorn {m['uvicorn']}; {m['connections']} connections; "
        f"{m['load_generator']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _colour(run: dict[str, Any]) -> str:
    scenario = SCENARIOS[run["scenario"]]
    if scenario.peer:
        return "#9b9b9b"
    if run["scenario"] in ("fastapi-constant", "raw-asgi"):
        return "#c9b458"
    if run["scenario"] == "no-middleware":
        return "#b05050"
    return "#4a7fc1"
