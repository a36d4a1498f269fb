# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv on first use.
# For contributors: `make lint` (ruff on src/, tests/ and benchmarks/, mypy on src/; configured in pyproject.toml).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first and pinned: this version's CPU wheel is on the build machines; an unpinned
# torch would pull a multi-GB CUDA build. Override for your own hardware: make TORCH=torch
TORCH  ?= torch==2.13.0

.PHONY: demo test lint browser bench venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,lint]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/gpt2lab demo

# The page tests drive Debian's chromium through chromedriver. Install them here, once, where we
# may (root with apt-get); elsewhere say what to do: pytest -m "not browser" runs everything else.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver for the browser tests"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		echo "note: apt-get could not install chromium and chromium-driver; the browser tests will fail"; \
	else \
		echo "note: /usr/bin/chromium or /usr/bin/chromedriver is missing and cannot be installed here (needs root and apt-get);"; \
		echo "      install Debian's chromium and chromium-driver, or skip those tests: $(PY) -m pytest -m 'not browser'"; \
	fi

test: $(VENV)/.installed browser
	$(PY) -m pytest -q

# both checkers always run (so one report lists everything); the target fails if either does
lint: $(VENV)/.installed
	@status=0; \
	$(VENV)/bin/ruff check src tests benchmarks || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
