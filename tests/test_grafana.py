"""docs/grafana-dashboard.json queries only metrics and labels the real Prometheus exposition has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.routing import Route

from redis_cache_middleware import MetricsEndpoint, RedisBackend

from .apps import cached_app
from .support import client_for

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\b(rcm_[a-z_]+)\b")
GROUPING = re.compile(r"\bby \(([^)]*)\)")
MATCHER = re.compile(r"\{([^}]*)\}")
LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
SAMPLE = re.compile(r"^(rcm_[a-z_]+)(?:\{([^}]*)\})? ", re.MULTILINE)


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


async def exposition(backend: RedisBackend) -> dict[str, set[str]]:
    """{metric sample name: its label names} from a real app's /metrics after hits, misses and a bypass."""
    app, _ = cached_app(backend)
    app.router.routes.append(Route("/metrics", MetricsEndpoint()))
    async with client_for(app) as client:
        await client.get("/predict?x=1")
        await client.get("/predict?x=1")
        await client.get("/predict?x=1", headers={"authorization": "Bearer a"})
        text = (await client.get("/metrics")).text
    found: dict[str, set[str]] = {}
    for name, labels in SAMPLE.findall(text):
        found.setdefault(name, set()).update(re.findall(r'(\w+)="', labels or ""))
    return found


async def test_every_metric_and_label_the_dashboard_queries_exists(backend: RedisBackend) -> None:
    exposed = await exposition(backend)
    expressions = queries()
    assert len(expressions) >= 9
    for expr in expressions:
        metrics = set(METRIC.findall(expr))
        assert metrics, expr
        for metric in metrics:
            assert metric in exposed, f"{metric} is not exposed (query: {expr})"
        used = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
        used |= {label for matcher in MATCHER.findall(expr) for label in LABEL.findall(matcher)}
        known = set().union(*(exposed[metric] for metric in metrics))
        assert used <= known, f"labels {used - known} are not exposed by {metrics} (query: {expr})"


def test_the_dashboard_covers_what_operators_watch() -> None:
    text = " ".join(queries())
    for metric in (
        "rcm_responses_total",
        "rcm_latency_seconds_bucket",
        "rcm_saved_seconds_total",
        "rcm_breaker_open",
        "rcm_store_failures_total",
        "rcm_rows_total",
    ):
        assert metric in text
