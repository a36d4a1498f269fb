# Two commands for a newcomer: `make demo` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first and pinned: this version's CPU wheel is on the build machines; an unpinned
# torch would pull a multi-GB CUDA build. Override for your own hardware: make TORCH=torch
TORCH  ?= torch==2.13.0

.PHONY: demo test bench venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/gpt2lab demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
