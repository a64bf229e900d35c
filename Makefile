# Two commands for a newcomer: `make demo` and `make test`. Both create a
# project-local virtualenv (.venv) and install everything from PyPI first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := var/demo
PATIENTS ?= 12

.PHONY: install demo airflow-ui browser emulators test lint bench bench-pipeline bench-cloud clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,airflow]'
	@# pip byte-compiles what it installs, but not an editable project: without this, a
	@# shell with PYTHONDONTWRITEBYTECODE=1 compiles the package at every start (~50 ms).
	$(BIN)/python -m compileall -q plugins dags
	touch $(STAMP)

install: $(STAMP)

DD := $(BIN)/dicom-deid
UI_PORT ?= 8080
# Airflow lives inside the project: its own home (SQLite), our dags/ folder, no examples.
AIRFLOW_ENV := AIRFLOW_HOME=$(CURDIR)/var/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False DICOM_DEID_DATA_DIR=$(CURDIR)/$(DEMO) \
	DICOM_DEID_COHORT_DIR=$(CURDIR)/sql/cohorts \
	DICOM_DEID_LANDING=$(CURDIR)/$(DEMO)/landing/dicom \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin,reviewer:user \
	AIRFLOW__API__BASE_URL=http://127.0.0.1:$(UI_PORT)
AIRFLOW := $(AIRFLOW_ENV) $(BIN)/airflow
LOGS := $(DEMO)/airflow-logs
TODAY := $(shell date -u +%Y-%m-%d)
YESTERDAY := $(shell date -u -d yesterday +%Y-%m-%d)
# The demo's project file (policy, cohort, window, key connection) is projects/demo_ultrasound.yaml.
DEMO_DAG := dicom_deid__demo_ultrasound

demo: $(STAMP)
	rm -rf $(DEMO) var/airflow
	@mkdir -p $(LOGS)
	@echo "== 0. a synthetic landing zone (planted PHI, bad files) that arrived yesterday; two keys"
	$(DD) synth $(DEMO)/landing --patients $(PATIENTS) --seed 7
	find $(DEMO)/landing/dicom -type f -exec touch -d "$(YESTERDAY) 12:00:00 UTC" {} +
	$(DD) keygen $(DEMO)/secrets/deid.key
	$(DD) keygen --vault $(DEMO)/secrets/vault.key
	$(DD) keygen --restricted $(DEMO)/secrets/restricted.key
	@echo "== 1. Airflow 3 in var/airflow (SQLite); the keys become the dicom_deid_key,"
	@echo "      dicom_deid_vault_key and dicom_deid_restricted_key connections (pseudonyms;"
	@echo "      the sealed mapping; the warehouse's encrypted restricted file)"
	$(AIRFLOW) db migrate > $(LOGS)/db-migrate.log 2>&1
	$(AIRFLOW) connections add dicom_deid_key --conn-type generic \
		--conn-password "$$(cat $(DEMO)/secrets/deid.key)" > /dev/null
	$(AIRFLOW) connections add dicom_deid_vault_key --conn-type generic \
		--conn-password "$$(cat $(DEMO)/secrets/vault.key)" > /dev/null
	$(AIRFLOW) connections add dicom_deid_restricted_key --conn-type generic \
		--conn-password "$$(cat $(DEMO)/secrets/restricted.key)" > /dev/null
	@echo "== 2. dicom_metadata_export for yesterday's interval (log: $(LOGS)/export.log)"
	$(AIRFLOW) dags test dicom_metadata_export $(TODAY)T01:00:00+00:00 > $(LOGS)/export.log 2>&1 \
		|| (tail -40 $(LOGS)/export.log; exit 1)
	@echo "== 3. $(DEMO_DAG) (projects/demo_ultrasound.yaml): cohort -> what is new -> shards"
	@echo "      -> de-identify -> verify -> review -> release into the tree -> load"
	@echo "      (log: $(LOGS)/deidentify.log; an API server on 127.0.0.1 answers the review)"
	$(AIRFLOW_ENV) $(BIN)/python -m dicom_deid.cli.airflow_review $(DEMO_DAG) \
		$(TODAY)T02:00:00+00:00 --log $(LOGS)/deidentify.log \
		|| (tail -40 $(LOGS)/deidentify.log; exit 1)
	DICOM_DEID_RESTRICTED_KEY_FILE=$(DEMO)/secrets/restricted.key \
		$(BIN)/python -m dicom_deid.cli.demo_report $(DEMO)
	@echo "\nOpen the Airflow UI on the same folder: make airflow-ui (then http://127.0.0.1:$(UI_PORT))"

airflow-ui: $(STAMP)
	@echo "Airflow UI on http://127.0.0.1:$(UI_PORT) (this machine only). Log in as admin, or as"
	@echo "reviewer (may answer reviews, not change settings): the passwords are printed below"
	@echo "and kept in var/airflow/simple_auth_manager_passwords.json.generated."
	@# airflow standalone starts its components by running `airflow` from PATH: ours first.
	PATH=$(CURDIR)/$(BIN):$$PATH $(AIRFLOW_ENV) AIRFLOW__API__HOST=127.0.0.1 \
		AIRFLOW__API__PORT=$(UI_PORT) $(BIN)/airflow standalone

lint: $(STAMP)
	$(BIN)/ruff check plugins tests benchmarks dags
	$(BIN)/mypy

# The browser test drives Debian's Chromium (never a browser download): installed once.
browser:
	@command -v chromium > /dev/null && command -v chromedriver > /dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver > /dev/null)

# The BigQuery emulator (bqemulator) and its pins (testcontainers, spatial) get their own venv.
# Offline it needs DuckDB's spatial extension where DuckDB looks for it ($HOME/.duckdb/...):
# copied from its PyPI wheel into a HOME of its own, and nothing is fetched at run time.
BQ_VENV := .venv-bq
BQ_STAMP := $(BQ_VENV)/.installed
BQ_EXT := $(BQ_VENV)/home/.duckdb/extensions/v1.5.5/linux_amd64
$(BQ_STAMP): Makefile
	$(PYTHON) -m venv $(BQ_VENV)
	$(BQ_VENV)/bin/pip install --quiet --upgrade pip
	$(BQ_VENV)/bin/pip install --quiet bqemulator==1.4.0 duckdb==1.5.5 \
		duckdb-extension-spatial==1.5.5 numpy testcontainers
	mkdir -p $(BQ_EXT)
	cp "$$($(BQ_VENV)/bin/python -c 'import duckdb_extension_spatial as m, pathlib; \
		print(next(pathlib.Path(m.__file__).parent.rglob("spatial.duckdb_extension")))')" $(BQ_EXT)/
	touch $(BQ_STAMP)

emulators: $(BQ_STAMP)

test: $(STAMP) browser $(BQ_STAMP)
	$(BIN)/ruff check plugins tests benchmarks dags
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 -q -m "not airflow"
	$(BIN)/python -m pytest -q -m airflow

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_deidentify.py
	$(BIN)/python benchmarks/bench_export.py
	$(BIN)/python benchmarks/bench_pixels.py

# The two DAGs (airflow dags test) against the same steps on the command line (a few minutes).
bench-pipeline: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py --write

# De-identification and export from gs:// to gs:// against the emulators, beside local disk.
bench-cloud: $(STAMP) $(BQ_STAMP)
	$(BIN)/python benchmarks/bench_cloud.py --write

clean:
	rm -rf $(VENV) $(BQ_VENV) var build *.egg-info
