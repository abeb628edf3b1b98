# Every target sets up .venv itself (idempotent): CPU torch first, then shiftkit with its extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export MPLBACKEND := Agg
# The test suite runs several torch processes at once (torchrun, DDP, kill/resume): idle
# OpenMP threads sleep instead of spinning, or they take each other's cores
# (benchmarks/bench_omp.py). `make demo` leaves the choice to the CLI (PASSIVE only when busy).
test test-fast: export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-fast lint bench efficacy clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Torch and torchvision first, as a matched pair (timm and smp import torchvision; PyPI's
	# torchvision cannot load beside the CPU-only torch 2.13.0 build): on these machines the pair
	# installs from local disk; a bare `pip install torch` elsewhere pulls whatever build pip picks.
	$(BIN)/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/shiftkit demo

test: setup
	$(BIN)/python -m pytest tests

test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

lint: setup
	$(BIN)/ruff check .

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	touch $@

bench: setup $(VENV)/.bench-installed
	$(BIN)/python benchmarks/run_all.py

# The efficacy table (docs/efficacy.md): every method x radiograph, dashcam, digits x 5 test data seeds,
# resumable (finished cells are kept), two shards of seeds on the 2 cores, then the table.
EFFICACY_ARGS ?= --mode test --n-seeds 5
# Fails when either shard fails (a table from part of the grid is not written).
efficacy: setup
	OMP_NUM_THREADS=1 $(BIN)/shiftkit benchmark $(EFFICACY_ARGS) --shard 0/2 --no-progress & pid=$$!; \
	OMP_NUM_THREADS=1 $(BIN)/shiftkit benchmark $(EFFICACY_ARGS) --shard 1/2; s1=$$?; \
	wait $$pid; s0=$$?; \
	if [ $$s0 -ne 0 ] || [ $$s1 -ne 0 ]; then \
	  echo "efficacy: a shard failed (shard 0/2 exit $$s0, shard 1/2 exit $$s1); no table written" >&2; exit 1; fi
	$(BIN)/shiftkit benchmark $(EFFICACY_ARGS) --summarise

clean:
	rm -rf $(VENV) runs .pytest_cache
