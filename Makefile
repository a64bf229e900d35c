# Two commands for a newcomer: `make demo` and `make test`. Both create a
# project-local virtualenv (.venv) and install everything from PyPI first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := var/demo
PATIENTS ?= 12

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/dicom-deid synth $(DEMO)/landing --patients $(PATIENTS) --seed 7
	$(BIN)/dicom-deid keygen $(DEMO)/secrets/deid.key
	$(BIN)/dicom-deid deidentify $(DEMO)/landing/dicom $(DEMO)/deid \
		--key-file $(DEMO)/secrets/deid.key \
		--errors $(DEMO)/restricted/errors.csv --mapping $(DEMO)/restricted/mapping.parquet \
		--no-progress || test $$? -eq 3
	$(BIN)/python -m dicom_deid.demo_report $(DEMO)

lint: $(STAMP)
	$(BIN)/ruff check plugins tests benchmarks

test: $(STAMP)
	$(BIN)/ruff check plugins tests benchmarks
	$(BIN)/python -m pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_deidentify.py
	$(BIN)/python benchmarks/bench_export.py

clean:
	rm -rf $(VENV) var build *.egg-info
