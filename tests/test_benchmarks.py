"""The benchmark's scenarios measure what they claim: every app of a group answers the same bytes, the
runner flags a wrong body or extra Redis commands, and each group's ratios are to its own constant route."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.apps import CONSTANT_BODY, GROUPS, HIT_PATH, SCENARIOS, fastapi_constant, no_cache, our_redis
from benchmarks.embedding import DIMENSIONS, EMBED_PATH, expected_body
from benchmarks.report import group_table
from benchmarks.run import problems, same_answer

from .redis_server import RedisServer
from .support import client_for


@pytest.fixture
def small_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's model with 10 trees in a temporary file (the apps train it on first use)."""
    monkeypatch.setenv("DEMO_MODEL_PATH", str(tmp_path / "iris.joblib"))
    monkeypatch.setenv("DEMO_TREES", "10")


@pytest.mark.usefixtures("small_model")
async def test_the_constant_routes_answer_the_computed_bytes() -> None:
    body = expected_body()
    assert 45_000 < len(body) < 55_000
    assert len(json.loads(body)["embedding"]) == DIMENSIONS
    for factory in (no_cache, fastapi_constant):
        async with client_for(factory("redis://unused")) as client:
            embedded = await client.get(EMBED_PATH)
            predicted = await client.get(HIT_PATH)
        assert embedded.content == body
        assert embedded.headers["content-type"] == "application/json"
        assert predicted.content == CONSTANT_BODY


@pytest.mark.usefixtures("small_model")
async def test_our_hit_on_the_50k_route_sends_the_whole_body(
    redis_server: RedisServer, redis_client: Any
) -> None:
    async with client_for(our_redis(redis_server.url)) as client:
        first = await client.get(EMBED_PATH)
        second = await client.get(EMBED_PATH)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.content == second.content == expected_body()


def _checks(body: bytes, header: str | None = "HIT") -> dict[str, Any]:
    one = [200, header, len(body), same_answer(body, "50k")]
    return {"first": one, "second": one, "after": one, "redis_keys_after_priming": 1}


def test_the_runner_flags_a_cut_body_and_a_second_redis_command() -> None:
    reformatted = json.dumps(json.loads(expected_body())).encode()
    assert reformatted != expected_body() and same_answer(reformatted, "50k")
    scenario = SCENARIOS["redis-hit-50k"]
    assert scenario.path == EMBED_PATH and GROUPS[scenario.group].reference == "constant-50k"
    assert problems(scenario, _checks(expected_body()), 1.0) == []
    cut = problems(scenario, _checks(expected_body()[:1000]), 1.0)
    assert cut[0] == f"the first response (1000 bytes) is not the group's {len(expected_body())}-byte answer"
    assert problems(scenario, _checks(expected_body()), 2.0) == [
        "2.00 Redis commands per request, more than 1"
    ]
    assert "expected x-cache HIT" in problems(scenario, _checks(expected_body(), "MISS"), 1.0)[0]


def _run(label: str, rps: float, p99: float) -> dict[str, Any]:
    result = {"rps": rps, "p50": p99 / 2, "p99": p99, "requests": 1000, "errors": {"read": 0}}
    return {"scenario": label, "label": label, "gc_freeze": False, "profile": False, "result": result}


def test_each_group_is_compared_with_its_own_constant_route() -> None:
    data = {
        "runs": [
            _run("fastapi-constant", 1000, 10),
            _run("redis-hit", 500, 30),
            _run("constant-50k", 2000, 5),
            _run("redis-hit-50k", 1000, 10),
        ]
    }
    small, big = group_table(data, "small"), group_table(data, "50k")
    [hit] = [row for row in small if row.startswith("| redis-hit |")]
    [hit_50k] = [row for row in big if row.startswith("| redis-hit-50k |")]
    assert "| 0.50x | 3.00x |" in hit
    assert "| 0.50x | 2.00x |" in hit_50k
    assert "p99 vs constant-50k" in big[2]


def test_make_bench_rewrites_only_the_readme_speed_block() -> None:
    from benchmarks.readme import END, START, replace_block

    text = f"# title\nbefore\n{START}\nold table\n{END}\nafter\n"
    assert replace_block(text, ["| new |"]) == f"# title\nbefore\n{START}\n| new |\n{END}\nafter\n"
    with pytest.raises(ValueError, match="no"):
        replace_block("# a README without the markers\n", ["| new |"])


def test_repetitions_give_medians_and_summed_counts() -> None:
    from benchmarks.reps import combine

    def rep(rps: float, p99: float, gen2: int, warning: str | None = None) -> dict[str, Any]:
        gc = {
            g: {"count": n, "total_ms": 100.0 * n, "max_ms": 100.0 if n else 0.0}
            for g, n in (("gen0", 10), ("gen1", 1), ("gen2", gen2))
        }
        result: dict[str, Any] = {
            "rps": rps,
            "p50": 1.0,
            "p99": p99,
            "max": p99 * 2,
            "requests": int(rps * 4),
            "errors": {"read": 1},
            "server": {"cpu_s": 1.0, "window_s": 4.0, "gc": gc},
        }
        if warning:
            result["warning"] = warning
        return result

    combined = combine([rep(100, 50.0, 1), rep(300, 10.0, 0, "slow"), rep(200, 20.0, 0), {"failed": "x"}])
    assert combined["rps"] == 200 and combined["p99"] == 20.0  # medians, not a mean dragged by one run
    assert combined["max"] == 100.0  # the worst of all
    assert combined["requests"] == 2400 and combined["errors"] == {"read": 3}
    assert combined["server"]["gc"]["gen2"] == {"count": 1, "total_ms": 100.0, "max_ms": 100.0}
    assert combined["server"]["cpu_s"] == 3.0
    assert "1 of 4 repetitions failed" in combined["warning"] and "slow" in combined["warning"]
    assert combine([{"skipped": "not installed"}]) == {"skipped": "not installed"}
