"""Rows the model computes on realistic prediction traffic, with the cache off, whole-body keys, and rows
+ typed keys + one row space.

    python -m benchmarks.workload                    # 3,000 requests per configuration
    python -m benchmarks.workload --requests 500     # quicker
    python -m benchmarks.workload --chart docs/workload.png

Traffic (seeded): Zipf-distributed iris rows (the 150 of the data set and 150 jittered ones); 40 % GET
/predict with the features as query parameters in random order, 20 % POST /predict with a JSON object
(keys shuffled), 40 % POST /predict/batch with 1-32 rows in the KServe v1 shape. Every number is written
the way some client would: `5.1`, `5.10` or, for whole values, `5`. Every answer is checked against the
model itself. The app runs in process (httpx's ASGI transport) against a private redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sklearn.datasets import load_iris

from demo.app import create_app, default_rules
from redis_cache_middleware import CacheRule, RedisBackend
from tests.redis_server import RedisServer

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
Row = tuple[float, float, float, float]


@dataclass
class Request:
    kind: str  # "get", "post" or "batch"
    rows: list[Row]
    method: str
    url: str
    body: bytes | None


@dataclass
class Result:
    mode: str
    requests: int
    rows_requested: int
    distinct_rows: int
    rows_computed: int
    wrong_answers: int

    @property
    def computed_per_distinct(self) -> float:
        return self.rows_computed / self.distinct_rows

    @property
    def row_hit_ratio(self) -> float:
        return 1 - self.rows_computed / self.rows_requested


def distinct_rows(rng: random.Random) -> list[Row]:
    """The iris rows, and as many again jittered by a tenth here and there; no duplicates."""
    data = [tuple(round(float(v), 1) for v in row) for row in load_iris().data]
    rows: list[Row] = list(dict.fromkeys(data))  # type: ignore[arg-type]
    seen = set(rows)
    while len(rows) < 300:
        base = rng.choice(data)
        row = tuple(round(v + rng.choice((-0.1, 0.0, 0.1)), 1) for v in base)
        if row not in seen:
            seen.add(row)  # type: ignore[arg-type]
            rows.append(row)  # type: ignore[arg-type]
    rng.shuffle(rows)
    return rows


def number(value: float, rng: random.Random) -> str:
    """`value` as one of the ways clients write it."""
    forms = [f"{value:.1f}", f"{value:.2f}"]
    if value.is_integer():
        forms.append(str(int(value)))
    return rng.choice(forms)


def make_traffic(count: int, seed: int) -> list[Request]:
    rng = random.Random(seed)
    rows = distinct_rows(rng)
    weights = [1 / rank**1.1 for rank in range(1, len(rows) + 1)]

    def pick(k: int) -> list[Row]:
        return rng.choices(rows, weights, k=k)

    traffic: list[Request] = []
    for _ in range(count):
        draw = rng.random()
        if draw < 0.4:
            (row,) = pick(1)
            pairs = [f"{name}={number(v, rng)}" for name, v in zip(FEATURES, row, strict=True)]
            rng.shuffle(pairs)
            traffic.append(Request("get", [row], "GET", "/predict?" + "&".join(pairs), None))
        elif draw < 0.6:
            (row,) = pick(1)
            fields = [f'"{name}": {number(v, rng)}' for name, v in zip(FEATURES, row, strict=True)]
            rng.shuffle(fields)
            traffic.append(
                Request("post", [row], "POST", "/predict", ("{" + ", ".join(fields) + "}").encode())
            )
        else:
            batch = pick(rng.randint(1, 32))
            instances = ", ".join("[" + ", ".join(number(v, rng) for v in row) + "]" for row in batch)
            body = ('{"instances": [' + instances + "]}").encode()
            traffic.append(Request("batch", batch, "POST", "/predict/batch", body))
    return traffic


async def replay(
    mode: str, rules: Sequence[CacheRule], traffic: list[Request], url: str, model: Path, typed: bool
) -> Result:
    """Send the traffic through the demo app with `rules` (none: no cache) and count the model's rows."""
    backend = RedisBackend.from_url(url, timeout=0.5)
    namespace = "workload-" + "".join(c for c in mode if c.isalnum())
    app = create_app(backend=backend, model_path=model, rules=rules, namespace=namespace, typed_keys=typed)
    expected = app.state.model
    wrong = 0
    limit = asyncio.Semaphore(8)

    async def send(client: httpx.AsyncClient, request: Request) -> None:
        nonlocal wrong
        async with limit:
            headers = {"content-type": "application/json"} if request.body is not None else {}
            response = await client.request(
                request.method, request.url, content=request.body, headers=headers
            )
        labels = [str(int(label)) for label in expected.predict([list(row) for row in request.rows])]
        answer: Any = response.json() if response.status_code == 200 else None
        got = (
            answer.get("predictions")
            if request.kind == "batch" and isinstance(answer, dict)
            else [answer.get("prediction")]
            if isinstance(answer, dict)
            else None
        )
        if got != labels:
            wrong += 1

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await asyncio.gather(*(send(client, request) for request in traffic))
    await backend.aclose()
    return Result(
        mode,
        len(traffic),
        sum(len(r.rows) for r in traffic),
        len({row for r in traffic for row in r.rows}),
        app.state.rows_computed,
        wrong,
    )


def whole_body_rules() -> list[CacheRule]:
    """Today's keying without rows: every request, batch included, is one opaque key."""
    return [
        CacheRule("/predict", ttl=600, methods=("GET", "POST")),
        CacheRule("/predict/batch", ttl=600, methods=("POST",)),
    ]


def chart(results: list[Result], path: Path) -> None:
    """A bar per configuration: model rows computed for the same traffic, against the distinct rows."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 3.2), dpi=120)
    names = [r.mode for r in results]
    bars = axes.barh(names, [r.rows_computed for r in results], color=["#999999", "#c98b4f", "#3b7dd8"])
    axes.axvline(results[0].distinct_rows, color="black", linestyle="--", linewidth=1)
    axes.text(results[0].distinct_rows, len(results) - 0.45, " distinct rows (the limit)", fontsize=8)
    for bar, r in zip(bars, results, strict=True):
        label = f" {r.rows_computed:,} ({r.computed_per_distinct:.2f} per distinct row)"
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(
        f"model rows computed for {results[0].requests:,} requests ({results[0].rows_requested:,} rows)"
    )
    axes.set_xlim(0, max(r.rows_computed for r in results) * 1.75)
    figure.tight_layout()
    figure.savefig(path)


def table(results: list[Result]) -> str:
    lines = [
        "| configuration | requests | rows requested | distinct rows | rows computed | computed per distinct "
        "row | row hit ratio | wrong answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.mode} | {r.requests} | {r.rows_requested} | {r.distinct_rows} | {r.rows_computed} | "
            f"{r.computed_per_distinct:.2f} | {r.row_hit_ratio:.1%} | {r.wrong_answers} |"
        )
    return "\n".join(lines)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--chart", type=Path, help="also draw the rows computed per configuration (matplotlib)"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="sklearn")  # sklearn's thread-pool notice, once per request
    traffic = make_traffic(args.requests, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder) / "redis").start()
        model = Path(folder) / "model.joblib"
        try:
            results = [
                await replay("cache off", [], traffic, server.url, model, False),
                await replay("whole-body keys", whole_body_rules(), traffic, server.url, model, False),
                await replay(
                    "rows + typed keys + one row space", default_rules(600), traffic, server.url, model, True
                ),
            ]
        finally:
            server.kill()
    print(table(results))
    if args.chart:
        chart(results, args.chart)
    if args.json:
        args.json.write_text(
            json.dumps(
                [r.__dict__ | {"computed_per_distinct": r.computed_per_distinct} for r in results], indent=2
            )
        )
    return 0 if all(r.wrong_answers == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
