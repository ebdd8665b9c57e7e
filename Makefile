# Two set-up commands: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all
# torch==2.13.0 is the CPU wheel here; for a GPU, install a CUDA build of torch first (README).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv run test test-slow test-slurm lint bench-extract bench-analysis demo-corpus clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[demo,test,dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --printshellcmds
	$(BIN)/snakemake --report report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/ruff check layerwise scripts tests benchmarks resources/demo

bench-extract: $(STAMP)
	$(BIN)/python benchmarks/bench_extract.py

bench-analysis: $(STAMP)
	$(BIN)/python benchmarks/bench_analysis.py

demo-corpus:
	$(PYTHON) resources/demo/make_demo.py

clean:
	rm -rf results figures report.html .snakemake
