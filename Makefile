# One command each: `make demo` (install + train/predict/evaluate on the sample data) and
# `make test` (install + the test suite). Each creates its own virtual environment in .venv and
# installs the CPU build of torch 2.13.0 first, so pip never pulls a multi-GB CUDA build.

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/lstmcast train sample_data/sales_monthly.csv --out runs/demo --config configs/monthly.yaml --overwrite
	$(BIN)/lstmcast predict sample_data/sales_monthly.csv --model runs/demo --out runs/demo-forecasts.csv
	$(BIN)/lstmcast evaluate sample_data/sales_monthly.csv --model runs/demo --out runs/demo-metrics.json
	@echo "forecasts: runs/demo-forecasts.csv   metrics: runs/demo-metrics.json   model: runs/demo/"

test: install
	$(PY) -m pytest -q

lint: install
	$(BIN)/ruff check lstmcast tests benchmarks sample_data

bench: install
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
