"""Turn benchmark results into Markdown (table, GC, profile split) and a PNG chart."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import Any

from benchmarks.apps import GROUPS, SCENARIOS
from benchmarks.profiles import profile_section

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
    "fastapi-redis-sdk",
    "matplotlib",
)


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
        "reps": args.reps,
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
    lines = [
        "## Results",
        "",
        f"{m['date']}; {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; Python {m['python']}; "
        f"uvicorn {m['uvicorn']}; redis-server {m['redis_server']}; load: {m['load_generator']}, "
        f"{m['connections']} connections, {m['warmup_s']:g} s warm-up then {m['duration_s']:g} s measured, "
        f"{m.get('reps', 1)} interleaved repetitions (medians; counts summed) "
        f"per scenario; code at {m['git']}; whole run {m['total_run_s']:g} s; 1-minute load average "
        f"{m.get('load_average_at_start', 0):.2f} at the start, {m['load_average_at_end']:.2f} at the end.",
        "",
        "Every iris scenario runs the same app (model, embedder, numpy, scikit-learn, FastAPI loaded), so "
        "each group's ratios are to a constant `async def` route with the same heap: req/s above 1x and p99 "
        "below 1x beat it. A cache hit's target is a p99 at most 2x the constant route's.",
    ]
    for group in GROUPS:
        table = group_table(data, group)
        if table:
            lines += ["", *table]
    warnings = [f"- {r['label']}: {r['result']['warning']}" for r in data["runs"] if "warning" in r["result"]]
    if warnings:
        lines += ["", "Warnings:", *warnings]
    lines += ["", *gc_section(data), "", *hitpath_section(data), "", *profile_section(data)]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines += ["", f"Packages: {packages}."]
    return "\n".join(lines) + "\n"


def group_table(data: dict[str, Any], group: str) -> list[str]:
    """The heading and table of one group's main runs (none: no lines), ratios to the group's reference."""
    runs = [r for r in _main_runs(data) if SCENARIOS[r["scenario"]].group == group]
    if not runs:
        return []
    spec = GROUPS[group]
    results = _by_label(data)
    reference, uncached = results.get(spec.reference, {}), results.get(spec.uncached, {})
    lines = [
        f"### {spec.title}",
        "",
        f"| scenario | what runs | req/s | p50 ms | p99 ms | req/s vs {spec.reference} "
        f"| p99 vs {spec.reference} | req/s vs {spec.uncached} | Redis cmds/req | body bytes "
        "| server CPU µs/req | our cache: hit / miss / bypass | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for run in runs:
        result, name = run["result"], run["label"]
        description = SCENARIOS[run["scenario"]].description
        if not _ok(run):
            reason = result.get("skipped") or result.get("failed")
            lines.append(f"| {name} | {description} | not run: {reason} |" + " |" * 10)
            continue
        rps, p99 = result["rps"], result["p99"]
        server = result.get("server", {})
        cpu_us = server.get("cpu_s", 0) * 1e6 / result["requests"] if result["requests"] else None
        lines.append(
            f"| {name} | {description} | {rps:,.0f} | {result['p50']:.2f} | {p99:.2f} "
            f"| {_ratio(rps, reference.get('rps'))} | {_ratio(p99, reference.get('p99'))} "
            f"| {_ratio(rps, uncached.get('rps'))} | {_fmt(result.get('redis_commands_per_request'), 2)} "
            f"| {_fmt(result.get('body_bytes'), 0)} | {_fmt(cpu_us, 0)} | {outcomes(server)} "
            f"| {_errors(result)} |"
        )
    return lines


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
        "Collections per 10,000 requests by generation (young gen0/gen1, full gen2), and their pauses.",
        "",
        "| run | gc.freeze | tracked objects | frozen | p50 ms | p99 ms | p99.9 ms | max ms "
        "| gen0 / gen1 / gen2 per 10k req | gen2 collections | gen2 max ms | gen2 total ms "
        "| gen0+1 total ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in rows:
        result, server = run["result"], run["result"].get("server", {})
        gc = server.get("gc", {})
        gen2 = gc.get("gen2", {})
        young = gc.get("gen0", {}).get("total_ms", 0) + gc.get("gen1", {}).get("total_ms", 0)
        requests = result.get("requests") or 0
        per_10k = " / ".join(
            f"{gc.get(f'gen{g}', {}).get('count', 0) * 10_000 / requests:.1f}" if requests else "-"
            for g in (0, 1, 2)
        )
        lines.append(
            f"| {run['label']} | {'yes' if run['gc_freeze'] else 'no'} "
            f"| {server.get('tracked_objects', 0):,} "
            f"| {server.get('frozen_objects', 0):,} | {result['p50']:.2f} | {result['p99']:.2f} "
            f"| {result['p999']:.2f} | {result['max']:.2f} | {per_10k} | {gen2.get('count', 0)} "
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
