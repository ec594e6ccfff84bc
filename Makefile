# Prettier Space Survey — the commands a newcomer needs.
#   make demo   set everything up and run the main job on the bundled local sky
#   make test   run the test suite against real local components
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GEN := services/api/generated
PROTOS := $(wildcard proto/prettyspace/v1/*.proto)
PYTEST_ARGS ?=

.PHONY: setup chromium proto up down status demo test lint bench k8s replicas clean

setup: $(STAMP) $(GEN)/.stamp .cache/triton/.installed chromium

# Debian's Chromium for the crawler (apt-get when missing; a no-op afterwards).
chromium:
	@deploy/install-chromium.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

proto: $(GEN)/.stamp

# Stubs are generated, never edited (the container build runs the same script).
$(GEN)/.stamp: $(PROTOS) proto/generate.py | $(STAMP)
	$(PY) proto/generate.py

.cache/triton/.installed: $(STAMP)
	$(PY) -m deploy.localstack install
	touch $@

up: setup
	$(PY) -m deploy.localstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m deploy.localstack down; fi

status: setup
	$(PY) -m deploy.localstack status

demo: setup
	$(PY) -m deploy.localstack demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) -m bench

# The replicas of the real sites alone, for poking at them (Ctrl-C stops them).
replicas: setup
	$(PY) -m services.universe.replicas

k8s: setup
	@for o in k8s/overlays/*/; do echo "--- $$o"; $(VENV)/bin/kubectl kustomize $$o >/dev/null && echo ok; done

clean: down
	rm -rf $(GEN) .stack
