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

WH := duckdb://$(DEMO)/warehouse.duckdb
DD := $(BIN)/dicom-deid

demo: $(STAMP)
	rm -rf $(DEMO)
	@echo "== 0. a synthetic landing zone (planted PHI, bad files) and a key"
	$(DD) synth $(DEMO)/landing --patients $(PATIENTS) --seed 7
	$(DD) keygen $(DEMO)/secrets/deid.key
	@echo "== 1. export metadata to Parquet and the warehouse (bad files are listed)"
	$(DD) export-metadata $(DEMO)/landing/dicom --out $(DEMO)/metadata/dicom_metadata \
		--warehouse $(WH) 2>/dev/null || test $$? -eq 3
	@echo "== 2. a cohort in SQL -> filter file"
	$(DD) cohort sql/cohorts/patients_with_us.sql --warehouse $(WH) \
		--param start_date=2022-01-01 --param end_date=2023-12-31 --out $(DEMO)/cohort.filter
	@echo "== 3. de-identify the cohort"
	$(DD) deidentify $(DEMO)/landing/dicom $(DEMO)/deid --filter $(DEMO)/cohort.filter \
		--warehouse $(WH) --key-file $(DEMO)/secrets/deid.key --option CleanDescriptors \
		--errors $(DEMO)/restricted/errors.csv --mapping $(DEMO)/restricted/mapping.parquet \
		--no-progress
	@echo "== 4. load the de-identified metadata back"
	$(DD) export-metadata $(DEMO)/deid --out $(DEMO)/metadata/deid_metadata \
		--table deid_metadata --warehouse $(WH)
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
