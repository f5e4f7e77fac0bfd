# anomalyclip: the everyday commands. `make demo` installs into .venv and runs the whole
# pipeline on a generated dataset with a tiny local CLIP (no network); `make test` runs the tests
# (all of them, as CI does; `make test-fast` leaves out those marked slow).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
DATASET ?= demo
VIDEOS ?= data/$(DATASET)
LISTS ?=
MODEL ?= openai/clip-vit-base-patch16
STORE ?= store/$(DATASET).zarr
EXTRA ?=
# Debian packages the tests start for real: a browser for the pages, a broker for MQTT
SYSTEM_PACKAGES ?= chromium mosquitto

.PHONY: install system demo test test-fast lint format features train eval clean

install: $(BIN)/.installed system

# The Debian packages the tests need, installed only where missing and only as root or with
# sudo; without them (or without apt) the install goes on and says so: the demo needs none
system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo=sudo; \
	  else sudo=none; fi; \
	  if [ "$$sudo" = none ] || ! command -v apt-get >/dev/null; then \
	    echo "not installed: $$missing (the browser and MQTT tests need them: apt-get install" $$missing")"; \
	  else \
	    { $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	      --no-install-recommends $$missing >/dev/null; } || echo "apt-get could not install:" $$missing; \
	  fi; \
	fi

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/anomaly demo --out demo

test: install
	$(BIN)/pytest

# the inner loop: every layer's quick tests, without those marked slow (make test runs all)
test-fast: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check anomalyclip tests
	$(BIN)/ruff format --check anomalyclip tests
	$(BIN)/python tools/code_shape.py

format: install
	$(BIN)/ruff format anomalyclip tests
	$(BIN)/ruff check --fix anomalyclip tests

# make features DATASET=xd VIDEOS=/data/xd  ->  store/xd.zarr
features: install
	$(BIN)/anomaly features --dataset $(DATASET) --videos $(VIDEOS) --out $(STORE) \
		--clip $(MODEL) $(if $(LISTS),--lists $(LISTS)) $(EXTRA)

train: install
	$(BIN)/anomaly train --features $(STORE) $(EXTRA)

clean:
	rm -rf demo build *.egg-info .pytest_cache .ruff_cache
