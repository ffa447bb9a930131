# knet_d2 — every target sets itself up (creates or reuses .venv, installs only what is missing).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.knet_installed
# The exact versions installed (tools/install_deps.sh pip -c); `make lock` updates it.
export KNET_LOCK ?= $(CURDIR)/requirements/lock.txt
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets
# Quickstart outputs go here (one folder per task).
QS_OUT  ?= output/quickstart
# e.g. QS_FLAGS=--overwrite to retrain into a QS_OUT that holds an earlier run's checkpoints.
QS_FLAGS ?=

.PHONY: install test test-all lint lock quickstart clean-synthetic

$(STAMP): setup.py tools/install_deps.sh knet_d2/install_lock.py $(filter-out none,$(KNET_LOCK))
	tools/install_deps.sh $(VENV)

install: $(STAMP)

## The test suite (what CI runs).
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --durations=15

## Including tests marked slow.
test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "" --durations=15

lint: $(STAMP)
	$(PY) -m ruff check .

## Upgrade on purpose: newest versions the ranges allow, in a scratch venv; `make test` there;
## requirements/lock.txt is rewritten only if the tests pass.
lock:
	tools/update_lock.sh

## Generate the synthetic datasets, train K-Net on the CPU, evaluate with D2's evaluators,
## write demo pictures.
quickstart: $(STAMP)
	$(PY) -m benchmarks.quickstart --output $(QS_OUT) $(QS_FLAGS)

clean-synthetic:
	rm -rf "$(DETECTRON2_DATASETS)/knet_synth"
