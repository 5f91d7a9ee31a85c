# One-command set-up: `make test` and `make quickstart` create .venv when it is missing, install
# everything (torch/torchvision pinned in constraints.txt, detectron2 via tools/setup/install_detectron2.py)
# and then run. A second run on a ready .venv installs nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.centermask-installed
PYTEST_ARGS ?=
QUICKSTART_ARGS ?=

.PHONY: install test quickstart format lint clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.py constraints.txt tools/setup/install_detectron2.py
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	$(PY) tools/setup/install_detectron2.py --constraints constraints.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

quickstart: $(STAMP)
	$(PY) tools/quickstart.py $(QUICKSTART_ARGS)

format: $(STAMP)
	$(PY) -m isort centermask tools tests
	$(PY) -m black -l 100 centermask tools tests

lint: $(STAMP)
	$(PY) -m isort --check-only centermask tools tests
	$(PY) -m black -l 100 --check centermask tools tests

clean:
	rm -rf $(VENV) build *.egg-info
