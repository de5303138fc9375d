"""One result from a scenario's repetitions: medians of the latencies and rates, sums of what is counted.

The runner measures every scenario `--reps` times, the scenarios interleaved (all of them once, then all
again), so that a slow minute of a shared machine lands on every scenario alike rather than on one.
"""

from __future__ import annotations

import statistics
from typing import Any

MEDIANS = ("rps", "p50", "p90", "p99", "p999", "redis_commands_per_request")


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of `MEDIANS`, the worst `max`, requests, errors, CPU and collections summed over the
    repetitions that ran; the other fields (checks, cache counters) from the median repetition. A
    scenario none of whose repetitions ran keeps the first one's reason (failed, skipped)."""
    ran = [r for r in results if "rps" in r]
    if not ran:
        return results[0]
    by_rate = sorted(ran, key=lambda r: r["rps"])
    combined = dict(by_rate[len(by_rate) // 2])
    for name in MEDIANS:
        values = [r[name] for r in ran if r.get(name) is not None]
        if values:
            combined[name] = statistics.median(values)
    combined["max"] = max(r.get("max", 0.0) for r in ran)
    combined["requests"] = sum(r["requests"] for r in ran)
    combined["errors"] = {
        kind: sum(r.get("errors", {}).get(kind, 0) for r in ran) for kind in ran[0].get("errors", {})
    }
    combined["server"] = _server(ran, dict(combined.get("server", {})))
    warnings = sorted({r["warning"] for r in ran if r.get("warning")})
    if warnings:
        combined["warning"] = "; ".join(warnings)
    failed = len(results) - len(ran)
    combined["reps"] = [
        {k: r[k] for k in ("rps", "p50", "p99", "requests") if k in r} for r in results if "rps" in r
    ]
    if failed:
        combined["warning"] = f"{failed} of {len(results)} repetitions failed; " + combined.get("warning", "")
    return combined


def _server(ran: list[dict[str, Any]], server: dict[str, Any]) -> dict[str, Any]:
    """The median repetition's server stats with CPU time, window and collections summed over all."""
    servers = [r.get("server", {}) for r in ran]
    for field in ("cpu_s", "window_s"):
        if all(field in s for s in servers):
            server[field] = sum(s[field] for s in servers)
    collections: dict[str, dict[str, float]] = {}
    for generation in ("gen0", "gen1", "gen2"):
        found = [s.get("gc", {}).get(generation) for s in servers]
        if all(found):
            collections[generation] = {
                "count": sum(g["count"] for g in found if g),
                "total_ms": sum(g["total_ms"] for g in found if g),
                "max_ms": max(g["max_ms"] for g in found if g),
            }
    if collections:
        server["gc"] = collections
    return server
