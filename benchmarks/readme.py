"""Put the last benchmark run into the README: `python -m benchmarks.readme` (run by `make bench`).

Replaces what lies between the README's `<!-- bench:start -->` and `<!-- bench:end -->` lines with one
table per group from benchmarks/results/results.json, and copies the chart to docs/benchmark.png.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from benchmarks.apps import GROUPS, SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def speed_block(data: dict[str, Any]) -> list[str]:
    """The README's tables: req/s, median and p99 per scenario, ratios to the group's constant route."""
    m = data["machine"]
    runs = {r["label"]: r for r in data["runs"] if "rps" in r["result"]}
    lines = [
        f"Measured by `make bench` on {m['date']} ({m['cores']} cores, {m['connections']} connections, "
        f"{m.get('reps', 1)} interleaved repetitions of {m['duration_s']:g} s per scenario, medians; code at "
        f"{m['git']}). Every app has the same heap (the model "
        "and the embedder loaded); ratios are to a constant route of that app.",
    ]
    for group, spec in GROUPS.items():
        reference = runs.get(spec.reference, {}).get("result", {})
        rows = [
            r
            for r in data["runs"]
            if SCENARIOS[r["scenario"]].group == group
            and not r["profile"]
            and r["label"] in runs
            and (not r["gc_freeze"] or r["scenario"].startswith(("redis-hit", "l1-hit")))
        ]
        if not rows:
            continue
        lines += [
            "",
            f"**{spec.title}**",
            "",
            "| scenario | req/s | p50 ms | p99 ms | req/s vs constant | p99 vs constant | Redis cmds/req |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for run in rows:
            result = run["result"]
            commands = result.get("redis_commands_per_request")
            lines.append(
                f"| {run['label']} | {result['rps']:,.0f} | {result['p50']:.2f} | {result['p99']:.2f} "
                f"| {_ratio(result['rps'], reference.get('rps'))} "
                f"| {_ratio(result['p99'], reference.get('p99'))} "
                f"| {'-' if commands is None else f'{commands:.2f}'} |"
            )
    return lines


def _ratio(value: float, reference: float | None) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def replace_block(text: str, block: list[str]) -> str:
    """`text` with the lines between the markers replaced by `block` (ValueError without the markers)."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {START} ... {END} block")
    return text[: start + len(START)] + "\n" + "\n".join(block) + "\n" + text[end:]


def main() -> None:
    data = json.loads((RESULTS / "results.json").read_text())
    readme = ROOT / "README.md"
    readme.write_text(replace_block(readme.read_text(), speed_block(data)))
    chart = RESULTS / "benchmark.png"
    if chart.exists():
        shutil.copyfile(chart, ROOT / "docs" / "benchmark.png")
    print(f"README.md speed tables and docs/benchmark.png updated from {RESULTS / 'results.json'}")


if __name__ == "__main__":
    main()
