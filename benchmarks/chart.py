"""benchmark.png: req/s and latency (p50, p99) of every run, one row of two panels per scenario group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.apps import GROUPS, SCENARIOS

COLOURS = {"ours": "#4a7fc1", "uncached": "#b05050", "constant": "#c9b458", "peer": "#9b9b9b"}
LEGEND = {
    "ours": "our cache",
    "uncached": "no cache",
    "constant": "constant baselines",
    "peer": "other caches",
}


def chart_runs(data: dict[str, Any], group: str) -> list[dict[str, Any]]:
    """The group's measured runs, top to bottom: its scenarios, then their gc.freeze runs (no profiles)."""
    ok = [
        r
        for r in data["runs"]
        if "rps" in r["result"] and not r["profile"] and SCENARIOS[r["scenario"]].group == group
    ]
    return [r for r in ok if not r["gc_freeze"]] + [r for r in ok if r["gc_freeze"]]


def chart(data: dict[str, Any], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -e '.[bench]')")
        return None
    groups = [(g, list(reversed(chart_runs(data, g)))) for g in GROUPS]
    groups = [(g, runs) for g, runs in groups if runs]
    if not groups:
        return None
    heights = [len(runs) + 1.5 for _, runs in groups]
    fig, axes = plt.subplots(
        len(groups),
        2,
        figsize=(14, 0.45 * sum(heights) + 2),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for (group, runs), (left, right) in zip(groups, axes, strict=True):
        _panels(left, right, group, runs)
    kinds = [Patch(color=colour, label=LEGEND[kind]) for kind, colour in COLOURS.items()]
    fig.legend(handles=kinds, loc="lower center", ncol=len(kinds), fontsize=8, frameon=False)
    m = data["machine"]
    fig.suptitle(
        f"{m['cpu']}, {m['cores']} cores; uvicorn {m['uvicorn']}; {m['connections']} connections; "
        f"{m['load_generator']}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _panels(left: Any, right: Any, group: str, runs: list[dict[str, Any]]) -> None:
    """req/s bars on the left; p50 and p99 on the right, with the group's 2x-constant p99 line."""
    spec = GROUPS[group]
    labels = [r["label"] for r in runs]
    rps = [r["result"]["rps"] for r in runs]
    left.barh(labels, rps, color=[COLOURS[SCENARIOS[r["scenario"]].kind] for r in runs])
    left.set_xscale("log")
    left.set_xlim(right=max(rps) * 3)
    left.set_xlabel("requests/s (log scale, higher is better)")
    left.set_title(spec.title, fontsize=10, loc="left")
    for y, value in enumerate(rps):
        left.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    positions = range(len(runs))
    p50 = [r["result"]["p50"] for r in runs]
    p99 = [r["result"]["p99"] for r in runs]
    right.barh([p + 0.2 for p in positions], p50, height=0.4, color="#7fa7d9", label="p50")
    right.barh([p - 0.2 for p in positions], p99, height=0.4, color="#e07b54", label="p99")
    for y, value in enumerate(p99):
        right.text(value, y - 0.2, f" {value:.1f}", va="center", fontsize=7)
    right.set_yticks(list(positions), labels)
    right.set_xscale("log")
    right.set_xlim(right=max(p99) * 3)
    right.set_xlabel("latency, ms (log scale, lower is better)")
    reference = next((r for r in runs if r["label"] == spec.reference), None)
    if reference is not None:
        right.axvline(2 * reference["result"]["p99"], color="#555555", linestyle="--", linewidth=1)
        right.plot([], [], color="#555555", linestyle="--", label=f"2x {spec.reference} p99")
    right.legend(loc="upper right", fontsize=7)
