# simkit: the two commands of the README.
#   make run   — create .venv, install simkit, simulate configs/config.toml
#   make test  — create .venv with test extras (+ Debian chromium), run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/config.toml

.PHONY: run test lint dashboard compare bench chromium clean

$(BIN)/simkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[ui,sweep,dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

run: $(BIN)/simkit
	$(BIN)/simkit run $(CONFIG)

chromium:
	@command -v chromium > /dev/null || { apt-get update -qq && apt-get install -y -qq chromium > /dev/null; }

test: $(VENV)/.dev chromium
	$(BIN)/pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check simkit tests benchmarks

dashboard: $(VENV)/.dev
	JUPYTER_PATH=$(CURDIR)/share/jupyter $(BIN)/voila notebooks/02_explorer.ipynb --template=simkit --no-browser --port=8866

compare: $(VENV)/.dev
	JUPYTER_PATH=$(CURDIR)/share/jupyter $(BIN)/voila notebooks/07_compare_dashboard.ipynb --template=simkit --no-browser --port=8867

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache
