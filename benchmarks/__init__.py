"""Throughput and latency of the cache against the app without it and against other caches.

`python -m benchmarks.run` runs everything; see docs/benchmarks.md.
"""
