"""Run Starlette's own test suite with and without the cache around every app, and compare per test.

`python -m transparency.run` (from the repository root): builds `.venv-transp` once (Starlette's sdist and
its test requirements, from the package registry only), runs the suite unwrapped and wrapped (both AnyIO
backends: the suite parametrises itself over asyncio and trio), prints the differences and
`transparency: N tests, M differences (K documented)`, and exits 1 when a difference is not documented in
`transparency/known_differences.txt`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tarfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-transp"
KNOWN = Path(__file__).with_name("known_differences.txt")
STARLETTE = "1.10.0"
"""The Starlette release whose tests are run; the project's own venv pins the same."""
NOT_FOR_TESTS = ("mypy", "ruff", "coverage", "twine", "pytest-codspeed", "types-", "starlette")
RUN_TIMEOUT = 420.0
"""Seconds one pytest run may take before the harness gives up on it (the CI budget is tight)."""


def _python() -> Path:
    return VENV / "bin" / "python"


def _pip(*args: str) -> None:
    subprocess.run([str(_python()), "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True)


def prepare(version: str) -> Path:
    """The unpacked sdist of Starlette `version` with its test requirements installed in `.venv-transp`."""
    suite = VENV / "suite" / f"starlette-{version}"
    if (suite / "tests").is_dir():
        return suite
    if not _python().exists():
        venv.create(VENV, with_pip=True)
    downloads = VENV / "suite" / "sdist"
    _pip("download", "--no-deps", "--no-binary", ":all:", f"starlette=={version}", "-d", str(downloads))
    archive = downloads / f"starlette-{version}.tar.gz"
    with tarfile.open(archive) as sdist:
        sdist.extractall(VENV / "suite", filter="data")
    if not (suite / "tests").is_dir():
        raise SystemExit(f"transparency: the sdist of starlette {version} has no tests/ folder")
    groups = tomllib.loads((suite / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    test_requirements = [r for r in groups if not r.lower().startswith(NOT_FOR_TESTS)]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    runtime = [r for r in project if not r.lower().startswith("starlette")]
    _pip("install", f"starlette[full]=={version}", *test_requirements, *runtime)
    return suite


def run_suite(suite: Path, wrapped: bool, results: Path) -> None:
    """One pytest run of the suite; the plugin writes one outcome per test to `results`."""
    shim = VENV / "shim"  # this checkout's packages only, not its `tests` (the suite has its own)
    shim.mkdir(exist_ok=True)
    for package in ("redis_cache_middleware", "transparency"):
        link = shim / package
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(ROOT / package)
    env = dict(os.environ, PYTHONPATH=str(shim), TRANSPARENCY_WRAP="1" if wrapped else "0")
    env["TRANSPARENCY_RESULTS"] = str(results)
    command = [str(_python()), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "transparency.plugin"]
    completed = subprocess.run(
        [*command, "tests"], cwd=suite, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    tail = completed.stdout.strip().splitlines()[-1:] or completed.stderr.strip().splitlines()[-3:]
    print(f"transparency: {'wrapped' if wrapped else 'unwrapped'} run: {' '.join(tail)}")
    if not results.exists():
        raise SystemExit(f"transparency: pytest wrote no results\n{completed.stderr[-2000:]}")


def known_differences() -> list[tuple[str, str]]:
    """(node id pattern, reason) pairs: differences that are the cache's documented job."""
    pairs = []
    for line in KNOWN.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pattern, _, reason = line.partition("|")
            pairs.append((pattern.strip(), reason.strip()))
    return pairs


def compare(unwrapped: dict[str, dict[str, str]], wrapped: dict[str, dict[str, str]]) -> int:
    """Print the tests whose outcome changed when wrapped; the exit status: 1 on an undocumented one."""
    known = known_differences()
    differences = sorted(
        test for test, base in unwrapped.items() if wrapped.get(test, {}).get("outcome") != base["outcome"]
    )
    documented = 0
    for test in differences:
        base, got = unwrapped[test], wrapped.get(test, {"outcome": "missing", "first_line": ""})
        reason = next((why for pattern, why in known if fnmatch.fnmatchcase(test, pattern)), None)
        documented += reason is not None
        mark = f"documented: {reason}" if reason else got["first_line"]
        print(f"  {test}: {base['outcome']} -> {got['outcome']}  {mark}")
    print(f"transparency: {len(unwrapped)} tests, {len(differences)} differences ({documented} documented)")
    return 1 if documented < len(differences) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starlette", default=STARLETTE, help="Starlette release whose tests are run")
    parser.add_argument("--compare-only", action="store_true", help="compare the results of the last runs")
    args = parser.parse_args()
    suite = prepare(args.starlette)
    outcomes = {wrapped: VENV / f"results-{'wrapped' if wrapped else 'unwrapped'}.json" for wrapped in (0, 1)}
    if not args.compare_only:
        for wrapped, results in outcomes.items():
            results.unlink(missing_ok=True)
            run_suite(suite, bool(wrapped), results)
    unwrapped, wrapped_run = (json.loads(outcomes[w].read_text()) for w in (0, 1))
    return compare(unwrapped, wrapped_run)


if __name__ == "__main__":
    sys.exit(main())
