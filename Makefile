# pixelwise: `make demo` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned: any other version pulls gigabytes of CUDA packages.
CONSTRAINTS := constraints.txt
DEMO := demo
DEMO_PREDICT := 24

.PHONY: setup demo demo-instances test bench quality clean

# One resolver pass for torch and the runtime dependencies (with the test tools when `make test` comes first).
# pip byte-compiles one file at a time (half of a 94 s install, measured 2026-12-06); compileall on every core
# does the same work in 24 s. The .pyc files are needed: where PYTHONDONTWRITEBYTECODE is set (it is on the
# development VM), nothing is cached later and every `import torch` would recompile. The libraries' own test
# folders (a quarter of the files) are never imported: not compiled.
PIP_INSTALL := $(BIN)/pip install -q --no-compile -c $(CONSTRAINTS)
COMPILE := $(BIN)/python -m compileall -q -j 0 -x '/tests?/' $(VENV)/lib > /dev/null || true

$(BIN)/pixelwise: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch==2.13.0 -e .
	$(COMPILE)
	touch $@

$(VENV)/.test-tools: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) torch==2.13.0 -e ".[test]"
	$(COMPILE)
	touch $(BIN)/pixelwise $@

setup: $(BIN)/pixelwise

# Synthetic data -> train -> evaluate -> predict, on the embedded default set.
demo: setup
	rm -rf $(DEMO)
	$(BIN)/pixelwise data synth $(DEMO)/data --n 400 --size 128 --seed 0
	# 50 s: the synthetic set's validation Dice passes 0.98 within the first minute on a 2-core VM.
	$(BIN)/pixelwise train --data $(DEMO)/data --out $(DEMO)/run --budget 50s
	# The threshold curve re-predicts the validation images: left out to keep the first run short.
	$(BIN)/pixelwise evaluate $(DEMO)/run --no-threshold-curve
	# A sample of the images, not all 400: 16 views each make predicting the whole set the slowest step.
	ls $(DEMO)/data/images/*.png | head -n $(DEMO_PREDICT) | xargs $(BIN)/pixelwise predict $(DEMO)/run --out $(DEMO)/predictions
	@echo ""
	@echo "report:      $(DEMO)/run/eval-test/report.html"
	@echo "masks:       $(DEMO)/predictions/*_mask.png (overlays: *_overlay.png)"

# The same on the embedded nuclei set: every object its own mask (instances.csv, *_instances.png, COCO JSON).
demo-instances: setup
	rm -rf $(DEMO)-instances
	$(BIN)/pixelwise data synth $(DEMO)-instances/data --task instances --n 200 --size 128 --seed 0
	$(BIN)/pixelwise train --data $(DEMO)-instances/data --out $(DEMO)-instances/run --budget 120s
	$(BIN)/pixelwise evaluate $(DEMO)-instances/run --no-threshold-curve
	ls -d $(DEMO)-instances/data/*/images/*.png | head -n 8 | xargs $(BIN)/pixelwise predict $(DEMO)-instances/run --out $(DEMO)-instances/predictions
	@echo ""
	@echo "report:      $(DEMO)-instances/run/eval-test/report.html"
	@echo "objects:     $(DEMO)-instances/predictions/*_instances.png, instances.csv"

test: $(VENV)/.test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 tests

bench: setup
	$(BIN)/pixelwise bench --json benchmarks/results/bench.json

quality: setup
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf $(VENV) $(DEMO) $(DEMO)-instances runs .pytest_cache
