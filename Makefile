# make demo: create .venv, install changekit, run the main job on generated data.
# make test: same set-up, then the test suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(VENV)/bin/pip install -q -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/changekit demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/changekit bench fc_siam_diff

clean:
	rm -rf $(VENV) demo_out
