# Set-up is part of every target: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision pair that installs from this workplace's local disk; elsewhere pip resolves them normally.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo_out
BENCH_DIR ?= bench_out
STAMP := $(VENV)/.installed

.PHONY: help install demo test bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install -q $(TORCH_PINS) 2>&1 | grep -v '^WARNING: Location' || true
	$(PIP) install -q -e '.[test,fast,s3,kaggle]' 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import shardgen, loaders, models, torch, webdataset, moto, datasets, wids, open_clip"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its test extras

demo: $(STAMP)  ## sample data → shards → verify → stream through the model → grid PNGs (offline)
	$(PY) scripts/demo.py --out $(DEMO_DIR)

test: $(STAMP)  ## run the test suite (CPU, offline)
	$(PY) -m pytest -q tests

bench: $(STAMP)  ## run the benchmarks; tables on stdout, JSON in benchmarks/results/
	$(PY) -m benchmarks.run --work $(BENCH_DIR)

clean:  ## remove demo/bench outputs (keeps .venv)
	rm -rf $(DEMO_DIR) $(BENCH_DIR) .pytest_cache
