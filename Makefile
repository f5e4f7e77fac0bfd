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

.PHONY: install demo test lint format features train eval clean

install: $(BIN)/.installed

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
