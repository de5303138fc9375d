# `make demo` runs the iris demo; `make test` runs the test suite. Both set everything up first.
# `make test-min` runs the suite again in .venv-min, on the LOWEST versions pyproject.toml declares for the
# core dependencies (each `name>=X` installed as `name==X`), so that those lower bounds stay true.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VENV_MIN ?= .venv-min
MIN_STAMP := $(VENV_MIN)/.installed
MIN_PINS = $(shell python3 -c 'import tomllib; deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; assert all(">=" in d for d in deps), deps; print(" ".join(repr(d.replace(">=", "==")) for d in deps))')
# pytest exits 5 when it collected no test: that fails too (make stops on any non-zero code), saying why.
PYTEST = -m pytest || { code=$$?; [ $$code -ne 5 ] || echo "pytest collected no tests" >&2; exit $$code; }

.PHONY: demo test test-min transparency lint bench redis-server clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[demo,dev]"
	touch $(STAMP)

$(MIN_STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q --upgrade pip
	$(VENV_MIN)/bin/python -m pip install -q -e ".[demo,dev]" $(MIN_PINS)
	touch $(MIN_STAMP)

# Installs redis-server with apt-get when missing and running as root; otherwise says how to get it.
redis-server:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && apt-get install -y -q redis-server; \
	  else \
	    echo "redis-server is not installed: 'sudo apt-get install redis-server' (Debian/Ubuntu) or 'brew install redis'"; \
	    exit 1; \
	  fi; }

demo: $(STAMP)
	@$(MAKE) -s redis-server || echo "continuing: the demo falls back to an in-process cache"
	$(PY) -m demo

test: $(STAMP) redis-server
	$(PY) $(PYTEST)

test-min: $(MIN_STAMP) redis-server
	$(VENV_MIN)/bin/python -c 'import importlib.metadata as m; print("lowest versions:", *(f"{n} {m.version(n)}" for n in ("starlette", "redis", "orjson")))'
	$(VENV_MIN)/bin/python $(PYTEST)

# Starlette's own test suite with and without the cache around every app (.venv-transp, from PyPI);
# fails on any difference not listed in transparency/known_differences.txt.
transparency:
	python3 -m transparency.run

bench: $(STAMP) redis-server
	$(PY) -m pip install -q -e ".[demo,bench]"
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q wrk; } || echo "no wrk: using the Python load generator"
	$(PY) -m benchmarks.run $(BENCH_ARGS)
	$(PY) -m benchmarks.readme
	$(PY) -m benchmarks.workload --chart docs/workload.png

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict redis_cache_middleware demo tests benchmarks

clean:
	rm -rf $(VENV) $(VENV_MIN) .venv-transp build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis demo/model.joblib
