"""Counters and latency histograms per rule, kept in process; Prometheus exposition when installed."""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Seconds: a hit is tens to hundreds of microseconds, a miss is a model call.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Outcome(enum.Enum):
    """How a response was produced, as metrics count it."""

    HIT = "hit"
    MISS = "miss"
    STALE = "stale"
    COLLAPSED = "collapsed"
    REVALIDATED = "revalidated"
    BYPASS = "bypass"
    PARTIAL = "partial"  # a batch answered partly from stored rows


OUTCOMES = tuple(outcome.value for outcome in Outcome)


@dataclass(slots=True)
class Histogram:
    """Cumulative-on-export bucket counts for `LATENCY_BUCKETS`, plus sum and count."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """An upper bound of the q-quantile from the buckets (None when empty or beyond the last bucket)."""
        if not self.count:
            return None
        rank, seen = q * self.count, 0
        for bound, count in zip(LATENCY_BUCKETS, self.counts, strict=False):
            seen += count
            if seen >= rank:
                return bound
        return None


@dataclass(slots=True)
class RuleMetrics:
    outcomes: Counter[str] = field(default_factory=Counter)
    bypass_reasons: Counter[str] = field(default_factory=Counter)
    stored: int = 0
    bytes_stored: int = 0
    store_failures: int = 0
    hit_latency: Histogram = field(default_factory=Histogram)
    miss_latency: Histogram = field(default_factory=Histogram)
    saved_seconds: float = 0.0
    rows_hit: int = 0
    rows_computed: int = 0


class HotKeys:
    """Approximate top-k of the keys served (space-saving counters: at most `size` keys kept, O(1) per
    hit while a key is tracked; evicting the smallest count is O(size) only when a new key arrives full)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.counts: dict[str, int] = {}

    def add(self, key: str) -> None:
        counts = self.counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < self.size:
            counts[key] = 1
        else:
            smallest = min(counts, key=counts.__getitem__)
            counts[key] = counts.pop(smallest) + 1

    def top(self, n: int = 10) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda item: -item[1])[:n]


class Metrics:
    """What the cache did, per rule name. Plain integer updates: cheap on the hit path."""

    def __init__(self, hot_keys: int = 64) -> None:
        self.rules: dict[str, RuleMetrics] = {}
        self.hot = HotKeys(hot_keys)
        self._flushed: dict[str, float] = {}
        self._flushed_at = 0.0

    def rule(self, name: str) -> RuleMetrics:
        metrics = self.rules.get(name)
        if metrics is None:
            metrics = self.rules[name] = RuleMetrics()
        return metrics

    def served(self, rule: str, outcome: Outcome, seconds: float, saved: float = 0.0) -> None:
        """Record a response: a hit-like outcome times the hit histogram, a miss the miss histogram;
        `saved` is the app time the answer avoided (the stored entry's compute time, `Entry.delta`)."""
        metrics = self.rule(rule)
        metrics.outcomes[outcome.value] += 1
        metrics.saved_seconds += saved
        (metrics.miss_latency if outcome is Outcome.MISS else metrics.hit_latency).observe(seconds)

    def rows(self, rule: str, hit: int, computed: int) -> None:
        """Record one batch request's rows: `hit` answered from the cache, `computed` by the app."""
        metrics = self.rule(rule)
        metrics.rows_hit += hit
        metrics.rows_computed += computed

    def touched(self, key: str) -> None:
        """Count one answer from the cache for `key` in the bounded hot-keys table."""
        self.hot.add(key)

    def totals(self) -> dict[str, float]:
        """Monotonic per-rule totals as `{rule}\t{field}` -> number (the Redis-side counter fields)."""
        out: dict[str, float] = {}
        for name, m in self.rules.items():
            for outcome, count in m.outcomes.items():
                out[f"{name}\t{outcome}"] = count
            out[f"{name}\tsaved_seconds"] = m.saved_seconds
            out[f"{name}\trows_hit"] = m.rows_hit
            out[f"{name}\trows_computed"] = m.rows_computed
        return out

    def counters_due(self, now: float, interval: float = 1.0) -> dict[str, float] | None:
        """What grew since the last call, at most once per `interval` seconds (None when not yet due or
        nothing grew); the caller adds it to the Redis hash and calls `counters_lost` if that fails."""
        if now - self._flushed_at < interval:
            return None
        self._flushed_at = now
        totals = self.totals()
        deltas = {
            k: v - self._flushed.get(k, 0.0) for k, v in totals.items() if v != self._flushed.get(k, 0.0)
        }
        self._flushed = totals
        return deltas or None

    def counters_lost(self, deltas: dict[str, float]) -> None:
        """Put back deltas that could not be written, so the next flush carries them."""
        for field_name, value in deltas.items():
            self._flushed[field_name] = self._flushed.get(field_name, 0.0) - value

    def bypassed(self, rule: str, reason: str) -> None:
        metrics = self.rule(rule)
        metrics.outcomes["bypass"] += 1
        metrics.bypass_reasons[reason] += 1

    def stored(self, rule: str, size: int, ok: bool) -> None:
        metrics = self.rule(rule)
        if ok:
            metrics.stored += 1
            metrics.bytes_stored += size
        else:
            metrics.store_failures += 1

    def snapshot(self) -> dict[str, Any]:
        """Plain data for `stats()`: counts, bypass reasons, bytes stored, and p50/p99 bounds per rule."""
        out: dict[str, Any] = {}
        for name, m in self.rules.items():
            out[name] = {
                **{outcome: m.outcomes[outcome] for outcome in OUTCOMES},
                "bypass_reasons": dict(m.bypass_reasons),
                "stored": m.stored,
                "bytes_stored": m.bytes_stored,
                "store_failures": m.store_failures,
                "hit_p50_s": m.hit_latency.quantile(0.5),
                "hit_p99_s": m.hit_latency.quantile(0.99),
                "miss_p50_s": m.miss_latency.quantile(0.5),
                "miss_p99_s": m.miss_latency.quantile(0.99),
                "saved_seconds": m.saved_seconds,
                "rows_hit": m.rows_hit,
                "rows_computed": m.rows_computed,
            }
        return out

    def collect(self, breaker: dict[str, object]) -> Iterator[Any]:
        """Prometheus metric families (needs `prometheus-client`)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        responses = CounterMetricFamily(
            "rcm_responses", "Responses by rule and outcome", labels=["rule", "outcome"]
        )
        bypasses = CounterMetricFamily(
            "rcm_bypasses", "Bypassed requests by rule and reason", labels=["rule", "reason"]
        )
        stored = CounterMetricFamily("rcm_stored_bytes", "Bytes written to the cache", labels=["rule"])
        failures = CounterMetricFamily(
            "rcm_store_failures", "Entries that could not be written", labels=["rule"]
        )
        latency = HistogramMetricFamily(
            "rcm_latency_seconds", "Time spent answering, by rule and path", labels=["rule", "path"]
        )
        saved = CounterMetricFamily(
            "rcm_saved_seconds", "App seconds that answers from the cache avoided", labels=["rule"]
        )
        rows = CounterMetricFamily("rcm_rows", "Batch rows by rule and result", labels=["rule", "result"])
        for name, m in self.rules.items():
            saved.add_metric([name], m.saved_seconds)
            rows.add_metric([name, "hit"], m.rows_hit)
            rows.add_metric([name, "computed"], m.rows_computed)
            for outcome in OUTCOMES:
                responses.add_metric([name, outcome], m.outcomes[outcome])
            for reason, count in m.bypass_reasons.items():
                bypasses.add_metric([name, reason], count)
            stored.add_metric([name], m.bytes_stored)
            failures.add_metric([name], m.store_failures)
            for path, histogram in (("hit", m.hit_latency), ("miss", m.miss_latency)):
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), histogram.counts, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                latency.add_metric([name, path], buckets, sum_value=histogram.total)
        state = GaugeMetricFamily("rcm_breaker_open", "1 while the circuit breaker skips the backend")
        state.add_metric([], 0.0 if breaker["state"] == "closed" else 1.0)
        errors = CounterMetricFamily("rcm_backend_errors", "Backend calls that failed or timed out")
        errors.add_metric([], float(str(breaker["total_failures"])))
        yield from (responses, bypasses, stored, failures, latency, saved, rows, state, errors)
