# Two commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.coral-installed
MEMBERS := coral-core coral-torch coral-lightning coral-hf coral-jax
PYTEST_ARGS ?=

.PHONY: install demo lint test bench bench-compare clean

LINT_PATHS := $(foreach m,$(MEMBERS),$(m)/src) tests bench examples

$(STAMP): Makefile constraints.txt pyproject.toml $(foreach m,$(MEMBERS),$(m)/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned to the CPU wheel, so nothing later pulls another build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e "coral-core[mlflow,plot,s3]" -e coral-torch -e coral-lightning -e coral-hf -e coral-jax -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf demo-repo
	$(PY) examples/demo.py demo-repo
	cd demo-repo && ../$(VENV)/bin/coral log
	@echo
	@echo "coral is installed in $(VENV), not on your PATH: run $(VENV)/bin/coral log (from demo-repo: ../$(VENV)/bin/coral log),"
	@echo "or 'source $(VENV)/bin/activate' once per shell and then just 'coral log'."

# ruff (rules in pyproject.toml) on every member, the tests, benches and examples; mypy on coral-core
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy coral-core/src/coral

test: $(STAMP)
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/storage.py

# Coral against torch.save / safetensors / DCP / ModelCheckpoint / Trainer / Orbax in real loops
# (about an hour on 2 quiet cores: 57 min measured for every case; see bench/compare.py)
bench-compare: $(STAMP)
	$(PY) bench/compare.py

clean:
	rm -rf $(VENV) demo-repo
