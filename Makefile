# anomalyclip: the everyday commands. `make demo` installs into .venv and runs the whole
# pipeline on a generated dataset with a tiny local CLIP (no network); `make test` runs the tests.

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
CHROMIUM ?= /usr/bin/chromium

.PHONY: install browser demo test lint format features train eval clean

install: $(BIN)/.installed browser

# Debian's chromium for the browser tests (Playwright drives it; no browser download), only
# where it is missing and only as root or with sudo
browser:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=; \
	  elif sudo -n true 2>/dev/null; then sudo=sudo; \
	  else echo "no $(CHROMIUM): the browser tests need apt-get install chromium"; exit 0; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
	    --no-install-recommends chromium >/dev/null; \
	fi

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: install
	$(BIN)/anomaly demo --out demo

test: install
	$(BIN)/pytest

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
		--model $(MODEL) $(if $(LISTS),--lists $(LISTS)) $(EXTRA)

train: install
	$(BIN)/anomaly train --features $(STORE) $(EXTRA)

clean:
	rm -rf demo build *.egg-info .pytest_cache .ruff_cache
