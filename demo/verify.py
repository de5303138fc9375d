"""`python -m demo.verify`: check that repeated /predict calls are served from the cache, and that a batch
reuses the rows the single calls computed (stdlib only)."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "sepal_length": (4.3, 7.9),
    "sepal_width": (2.0, 4.4),
    "petal_length": (1.0, 6.9),
    "petal_width": (0.1, 2.5),
}
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Result:
    """One HTTP exchange as seen by the client."""

    method: str
    status: int
    x_cache: str
    elapsed_ms: float
    body: str


class Unreachable(Exception):
    """The server could not be contacted at all."""


def default_url() -> str:
    """Return the base URL built from `$HOST` and `$PORT` (defaults 127.0.0.1:8000)."""
    host = os.environ.get("HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('PORT', '8000')}"


def random_features(rng: random.Random) -> dict[str, float]:
    """Return plausible iris measurements, rounded to one decimal."""
    return {name: round(rng.uniform(lo, hi), 1) for name, (lo, hi) in FEATURE_RANGES.items()}


def call(request: urllib.request.Request) -> Result:
    """Send `request` and return what came back; raise Unreachable if no HTTP response arrives."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            status: int = response.status
            x_cache: str = response.headers.get("X-Cache", "-")
            raw: bytes = response.read()
    except urllib.error.HTTPError as exc:
        status = exc.code
        x_cache = exc.headers.get("X-Cache", "-")
        raw = exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(str(getattr(exc, "reason", exc))) from exc
    elapsed_ms = (time.perf_counter() - start) * 1000
    return Result(request.get_method(), status, x_cache, elapsed_ms, raw.decode("utf-8", "replace"))


def show(result: Result) -> None:
    """Print `result` on one line."""
    print(
        f"{result.method:<4} {result.x_cache:<6} {result.status} {result.elapsed_ms:8.1f} ms  {result.body}"
    )


def check_pair(label: str, first: Result, second: Result) -> list[str]:
    """Return the reasons `second` is not a cache hit replaying `first` (empty if it is)."""
    problems = []
    if first.status != 200:
        problems.append(f"{label}: first call returned status {first.status}")
    if second.x_cache != "HIT":
        problems.append(f"{label}: second call X-Cache is {second.x_cache!r}, expected 'HIT'")
    if second.body != first.body:
        problems.append(f"{label}: second body {second.body!r} differs from first {first.body!r}")
    return problems


def check_batch(first: Result, second: Result, singles: list[Result]) -> list[str]:
    """Return the reasons the batch did not reuse the single calls' rows (empty if it did): the first call
    computes only its new row (PARTIAL), the second is a HIT, and both agree with the single answers."""
    problems = check_pair("BATCH", first, second)
    if first.x_cache != "PARTIAL":
        problems.append(f"BATCH: first call X-Cache is {first.x_cache!r}, expected 'PARTIAL'")
    try:
        predictions = json.loads(first.body)["predictions"]
        known = [json.loads(single.body)["prediction"] for single in singles]
    except (ValueError, KeyError, TypeError):
        return [*problems, f"BATCH: unexpected body {first.body!r}"]
    if predictions[: len(known)] != known:
        problems.append(f"BATCH: predictions {predictions} disagree with the single calls' {known}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run the GET and POST pairs; return 0 if both second calls were HITs, 1 if not, 2 if unreachable."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url", default=default_url(), help="base URL of the demo server (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    base: str = args.url.rstrip("/")

    rng = random.Random()
    query = urllib.parse.urlencode(random_features(rng))
    body = json.dumps(random_features(rng)).encode()

    def get() -> urllib.request.Request:
        return urllib.request.Request(f"{base}/predict?{query}", method="GET")

    def post() -> urllib.request.Request:
        return urllib.request.Request(
            f"{base}/predict", data=body, method="POST", headers={"Content-Type": "application/json"}
        )

    rows = [list(random_features(rng).values())]  # a new row, beside the GET's and the POST's
    get_row = [float(v) for v in dict(urllib.parse.parse_qsl(query)).values()]
    post_row = list(json.loads(body).values())
    instances = [get_row, post_row, *rows]

    def batch() -> urllib.request.Request:
        data = json.dumps({"instances": instances}).encode()
        return urllib.request.Request(
            f"{base}/predict/batch", data=data, method="POST", headers={"Content-Type": "application/json"}
        )

    problems: list[str] = []
    try:
        singles: list[Result] = []
        for label, make in (("GET", get), ("POST", post)):
            first = call(make())
            show(first)
            second = call(make())
            show(second)
            problems += check_pair(label, first, second)
            singles.append(first)
        first, second = call(batch()), call(batch())
        show(first)
        show(second)
        problems += check_batch(first, second, singles)
    except Unreachable as exc:
        print(f"cannot reach {base} ({exc}); start it with `make demo` or `python -m demo`")
        return 2

    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
