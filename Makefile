# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the pipeline on the embedded default (synthetic data, tiny-cpu preset).
run: $(STAMP)
	$(BIN)/videorft run

## Run the whole test suite (2 workers).
test: $(STAMP)
	$(BIN)/pytest -n 2 --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/extract_frames.py
	$(BIN)/python benchmarks/grpo_step.py

clean:
	rm -rf data reports/*.json .dvc/cache .dvc/tmp
