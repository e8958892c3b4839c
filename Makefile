# Two commands on a fresh machine with Python 3.11:  make demo   and   make test
# torch is pinned to the CPU wheel 2.13.0 and installed first: a bare `torch` requirement with no
# torch present would pull a multi-GB CUDA build. The package itself only asks for a range.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test install clean help

help:
	@echo "make demo   - create .venv, install, run the main job on the bundled digits data"
	@echo "make test   - run the test suite through tox (the default, CI-sized run)"
	@echo "make clean  - remove .venv, .tox and demo outputs"

$(BIN)/genbench: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/genbench

demo: $(BIN)/genbench
	$(BIN)/genbench demo

test: $(BIN)/genbench
	$(BIN)/tox

clean:
	rm -rf $(VENV) .tox outputs
