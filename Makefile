# Set-up is part of every target: `make demo` and `make test` work on a fresh clone.
# `make demo` installs the project with what the demo needs; `make test` adds the test extras.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision pair that installs from this workplace's local disk; elsewhere pip resolves them normally.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_EXTRAS ?= fast,encoder-init
TEST_EXTRAS ?= test,fast,s3,kaggle,encoder-init,ray
DEMO_DIR ?= demo_out
BENCH_DIR ?= bench_out
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
LOG := $(VENV)/install.log
# pip's progress, one line per package it fetches or installs (everything it says goes to $(LOG))
SHOW_PIP := 2>&1 | tee -a $(LOG) | { grep --line-buffered -E '^ *(Collecting|Processing|Downloading|Installing|Successfully)|ERROR|error:' || true; }

.PHONY: help install demo test test-fast bench scale gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "[1/4] creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "[2/4] pip (full log: $(LOG))"; set -o pipefail; $(PIP) install --upgrade pip $(SHOW_PIP)
	@echo "[3/4] torch + torchvision (the largest download)"; set -o pipefail; \
		$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install $(TORCH_PINS) $(SHOW_PIP)
	@echo "[4/4] the project with extras $(DEMO_EXTRAS)"; set -o pipefail; \
		$(PIP) install -e '.[$(DEMO_EXTRAS)]' $(SHOW_PIP)
	$(PY) -c "import shardgen, loaders, models, torch, webdataset, open_clip, matplotlib"
	@touch $(STAMP)
	@echo "installed; put the commands on PATH with: source $(VENV)/bin/activate (or run $(VENV)/bin/shardgen ...)"

$(TEST_STAMP): $(STAMP)
	@echo "test extras ($(TEST_EXTRAS))"; set -o pipefail; $(PIP) install -e '.[$(TEST_EXTRAS)]' $(SHOW_PIP)
	$(PY) -c "import moto, datasets, wids, open_clip, clip_benchmark, nbclient, ipykernel"
	@touch $(TEST_STAMP)

install: $(STAMP)  ## create .venv and install the project with what the demo needs

demo: $(STAMP)  ## sample data → shards → verify → grid PNG → stream through the model (offline)
	$(PY) scripts/demo.py --out $(DEMO_DIR)

test: $(TEST_STAMP)  ## add the test extras, run the test suite (CPU, offline)
	$(PY) -m pytest -q tests

test-fast: $(TEST_STAMP)  ## the suite without the tests marked slow (each over ~3 s): under 3 minutes quiet
	$(PY) -m pytest -q -m "not slow" tests

bench: $(TEST_STAMP)  ## run the benchmarks; tables on stdout, JSON in benchmarks/results/
	$(PY) -m benchmarks.run --work $(BENCH_DIR)

scale: $(STAMP)  ## COCO-size rehearsal, every stage timed (IMAGES=2000; default: full COCO 2014, hours)
	$(PY) -m benchmarks.scale --work $(BENCH_DIR)/scale $(if $(IMAGES),--images $(IMAGES))

gpu-check: $(STAMP)  ## on a CUDA machine: CUDA tests, P6 step rates, GPU decode, captions (≤ 8 min; docs/gpu.md)
	$(PY) -m benchmarks.gpu_check --work $(BENCH_DIR)/gpu

clean:  ## remove demo/bench outputs (keeps .venv)
	rm -rf $(DEMO_DIR) $(BENCH_DIR) .pytest_cache
