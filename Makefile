# compkit: `make folds train ensemble submit` runs one competition end to end.
# Variables: COMPETITION (configs/<name>.toml), PRESET (smoke|cpu|gpu; default gpu with a GPU, else cpu),
# DATA_DIR (default data/<competition>), BACKBONES ("cnn_small resnet_small"), SET (extra --set overrides),
# GPU=1 for `make setup` to install TensorFlow's CUDA libraries.
COMPETITION ?= dacon-cv-2020
PRESET ?=
DATA_DIR ?=
BACKBONES ?=
SET ?=
NAME ?=
GPU ?=
VENV ?= .venv
PYTHON := $(VENV)/bin/python
ARGS = --competition $(COMPETITION) $(if $(PRESET),--preset $(PRESET)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
       $(if $(BACKBONES),--backbones "$(BACKBONES)") $(foreach s,$(SET),--set $(s))

.PHONY: help setup folds train ensemble submit all report test clean

help:
	@echo "make setup                 venv + pip install -e '.[dev]' (GPU=1 adds tensorflow[and-cuda])"
	@echo "make folds train ensemble submit COMPETITION=... DATA_DIR=... PRESET=... BACKBONES=..."
	@echo "make all                   the four stages in order"
	@echo "make report                runs/<competition>/report/index.html (after ensemble/submit)"
	@echo "make test                  the test suite"
	@echo "make clean                 delete folds/ and runs/ of COMPETITION (submissions are kept)"

setup:
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev$(if $(GPU),$(comma)gpu)]'

comma := ,

folds train ensemble all report:
	$(PYTHON) -m compkit $@ $(ARGS)

submit:
	$(PYTHON) -m compkit submit $(ARGS) $(if $(NAME),--name $(NAME))

test:
	$(PYTHON) -m pytest

clean:
	rm -rf runs/$(COMPETITION) folds/$(COMPETITION)
