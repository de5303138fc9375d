# `make demo` runs the iris demo; `make test` runs the test suite. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench redis-server clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[demo,dev]"
	touch $(STAMP)

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
	$(PY) -m pytest

bench: $(STAMP) redis-server
	$(PY) -m pip install -q -e ".[demo,bench]"
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q wrk; } || echo "no wrk: using the Python load generator"
	$(PY) -m benchmarks.run $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict redis_cache_middleware demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis demo/model.joblib
