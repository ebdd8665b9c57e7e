# Two set-up commands: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all
# torch==2.13.0 is the CPU wheel here; for a GPU, install a CUDA build of torch first (README).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv run test test-slow test-gpu test-slurm lint bench-extract bench-analysis bench-scale \
	demo-corpus clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[demo,test,dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)
	$(BIN)/snakemake --report report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# The CUDA checks alone (tests/test_gpu.py); `make test` runs them too where CUDA is visible.
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/ruff check layerwise scripts tests benchmarks resources/demo

bench-extract: $(STAMP)
	$(BIN)/python benchmarks/bench_extract.py

bench-analysis: $(STAMP)
	$(BIN)/python benchmarks/bench_analysis.py

bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py

demo-corpus:
	$(PYTHON) resources/demo/make_demo.py

clean:
	rm -rf results figures report.html .snakemake

# SLURM (docs/cluster.md). test-slurm: a one-node SLURM on this machine (root; installs
# Debian's slurm packages when missing), the workflow through sbatch against a local run; the
# daemons are stopped by PID whatever happens. install-profile: `snakemake --profile slurm`.
.PHONY: install-profile
SNAKEMAKE_PROFILES ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
SLURM_PROFILE_NAME ?= slurm

test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q -m slurm tests/test_slurm.py; rc=$$?; bash tests/slurm/stop.sh; exit $$rc

install-profile:
	@dest="$(SNAKEMAKE_PROFILES)/$(SLURM_PROFILE_NAME)"; src="$(CURDIR)/profiles/slurm"; \
	if [ -e "$$dest" -o -L "$$dest" ] && [ "$$(readlink "$$dest")" != "$$src" ]; then \
	  echo "$$dest exists and is not a link to $$src: remove it, or pick another name" \
	    "(make install-profile SLURM_PROFILE_NAME=layerwise-slurm)" >&2; exit 1; \
	fi; \
	mkdir -p "$(SNAKEMAKE_PROFILES)" && ln -sfn "$$src" "$$dest" && \
	echo "installed: $$dest -> $$src (use: snakemake --profile $(SLURM_PROFILE_NAME))"
