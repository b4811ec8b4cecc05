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

.PHONY: help install demo test bench scale gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (log: $(VENV)/install.log)"
	@$(PIP) install -q --upgrade pip > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install -q $(TORCH_PINS) >> $(VENV)/install.log 2>&1 \
		|| (cat $(VENV)/install.log; exit 1)
	@$(PIP) install -q -e '.[test,fast,s3,kaggle]' >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	$(PY) -c "import shardgen, loaders, models, torch, webdataset, moto, datasets, wids, open_clip, clip_benchmark"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its test extras

demo: $(STAMP)  ## sample data → shards → verify → stream through the model → grid PNGs (offline)
	$(PY) scripts/demo.py --out $(DEMO_DIR)

test: $(STAMP)  ## run the test suite (CPU, offline)
	$(PY) -m pytest -q tests

bench: $(STAMP)  ## run the benchmarks; tables on stdout, JSON in benchmarks/results/
	$(PY) -m benchmarks.run --work $(BENCH_DIR)

scale: $(STAMP)  ## COCO-size rehearsal, every stage timed (IMAGES=2000; default: full COCO 2014, hours)
	$(PY) -m benchmarks.scale --work $(BENCH_DIR)/scale $(if $(IMAGES),--images $(IMAGES))

gpu-check: $(STAMP)  ## on a CUDA machine: CUDA tests, P6 step rates, GPU decode, captions (≤ 8 min; docs/gpu.md)
	$(PY) -m benchmarks.gpu_check --work $(BENCH_DIR)/gpu

clean:  ## remove demo/bench outputs (keeps .venv)
	rm -rf $(DEMO_DIR) $(BENCH_DIR) .pytest_cache
