# Two commands for a fresh machine:  make figures   and   make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lengthgen-installed
CORES  ?= all
SNAKE_ARGS ?=

.PHONY: figures test test-gpu test-slurm all dryrun-paper wheelhouse wheelhouse-workflow bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -c constraints.txt -e ".[workflow,hub,test]"
	touch $(STAMP)

figures: $(STAMP)  ## render every figure and table from the committed results
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake --cores $(CORES) figures $(SNAKE_ARGS)

all: $(STAMP)  ## recompute everything the default config describes (GPU)
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake --cores $(CORES) all $(SNAKE_ARGS)

test: $(STAMP)  ## CPU test suite (tests/gpu skip without CUDA)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q tests

test-gpu: $(STAMP)  ## tests/gpu on a CUDA machine (needs the gpu extra or the wheelhouse)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q -s tests/gpu

test-slurm: $(STAMP)  ## the SLURM profile on a one-node loopback cluster (root, Debian/Ubuntu; ~5 min)
	PYTHON=$(abspath $(PY)) tests/slurm/run.sh

BENCH_OUT ?= bench-out
bench: $(STAMP)  ## speed and memory benchmarks on a GPU -> results/bench/summary.json
	$(PY) bench/run.py --out $(BENCH_OUT) && $(PY) bench/report.py $(BENCH_OUT)

dryrun-paper: $(STAMP)  ## resolve the paper-scale DAG without running it
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake all -n --configfile config/paper.yaml

# Wheels for air-gapped GPU nodes. torch and triton come from the node's own install; the
# compiled pieces (rpds-py) are fetched for the node's Python (GPU_PYTHON, default 3.12).
WHEELHOUSE ?= wheelhouse
GPU_PYTHON ?= 3.12
FLA_VERSION ?= 0.6.0
MAMBA_VERSION ?= 2.3.2.post1
PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
wheelhouse: $(STAMP)
	mkdir -p $(WHEELHOUSE)
	$(PY) -m pip download -q --no-deps -d $(WHEELHOUSE) "fla-core==$(FLA_VERSION)" "flash-linear-attention==$(FLA_VERSION)" \
		jsonschema jsonschema-specifications referencing
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		$(PLATFORMS) -d $(WHEELHOUSE) rpds-py
	MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE $(PY) -m pip wheel -q --no-deps --no-build-isolation \
		-w $(WHEELHOUSE) "mamba-ssm==$(MAMBA_VERSION)"
	$(PY) -m pip wheel -q --no-deps -w $(WHEELHOUSE) .
	ls -1 $(WHEELHOUSE)

# Snakemake and its dependencies for running the DAG on an air-gapped GPU node (`snakemake results`):
# pure wheels as they are, source-only packages built into wheels, compiled ones fetched again for
# GPU_PYTHON. Packages the node already has are harmless duplicates (install with --no-deps).
SNAKEMAKE_PINS ?= "snakemake>=8.10" "snakemake-executor-plugin-slurm>=2.8"
wheelhouse-workflow: $(STAMP)
	rm -rf $(WHEELHOUSE)/.resolve && mkdir -p $(WHEELHOUSE)/.resolve
	$(PY) -m pip download -q -d $(WHEELHOUSE)/.resolve $(SNAKEMAKE_PINS)
	cd $(WHEELHOUSE)/.resolve && for f in *; do \
		case "$$f" in \
		*-none-any.whl|*-abi3-*.whl) cp "$$f" .. ;; \
		*.whl) n=$$(echo "$$f" | cut -d- -f1); v=$$(echo "$$f" | cut -d- -f2); \
			$(abspath $(PY)) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
				--implementation cp $(PLATFORMS) --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64 \
				--platform manylinux_2_5_x86_64 -d .. "$$n==$$v" || exit 1 ;; \
		*) $(abspath $(PY)) -m pip wheel -q --no-deps -w .. "$$f" || exit 1 ;; \
		esac; done
	rm -rf $(WHEELHOUSE)/.resolve
	ls -1 $(WHEELHOUSE)

clean-venv:
	rm -rf $(VENV)
