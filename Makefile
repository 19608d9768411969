# compkit: `make folds train ensemble submit` runs one competition end to end.
# Variables: COMPETITION (configs/<name>.toml), PRESET (smoke|cpu|gpu; default gpu with a GPU, else cpu),
# DATA_DIR (default data/<competition>), BACKBONES ("cnn_small resnet_small"), SET (extra --set overrides),
# GPU=1 for `make setup` to install TensorFlow's CUDA libraries; DEVICES ("0,2": GPUs for train/tune, one process each);
# EXECUTOR=ray: train/tune folds and trials as Ray tasks on $RAY_ADDRESS's cluster (docs/many-machines.md).
COMPETITION ?= fashion-mnist
PRESET ?=
DATA_DIR ?=
BACKBONES ?=
SET ?=
NAME ?=
TRIALS ?=
WORKER ?=
NO_TUNED ?=
GPU ?=
DEVICES ?=
EXECUTOR ?=
VARIANTS ?=
FROM_ZIP ?=
FILE ?=
OUT ?=
VENV ?= .venv
# One W&B group per make invocation: `make folds train ensemble submit` is one experiment.
GROUP ?= $(shell date -u +%Y%m%dT%H%M%SZ)
export COMPKIT_GROUP := $(GROUP)
PYTHON := $(VENV)/bin/python
ARGS = --competition $(COMPETITION) $(if $(PRESET),--preset $(PRESET)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) \
       $(if $(BACKBONES),--backbones "$(BACKBONES)") $(if $(DEVICES),--devices "$(DEVICES)") $(if $(EXECUTOR),--executor $(EXECUTOR)) \
       $(foreach s,$(SET),--set $(s))

.PHONY: help setup env data check folds train ensemble submit all tune tune-status report pseudo distill sync test test-fast docs clean bench bench-memory \
        bench-throughput bench-input bench-pipeline bench-ablation upload lb-sync adversarial predict package rehearse upload-bundle push-kernel

help:
	@echo "make setup                 venv + pip install -e '.[dev]' (GPU=1 adds tensorflow[and-cuda])"
	@echo "make env                   versions (TensorFlow, Keras, CUDA/cuDNN), GPUs and CPU features; the preset and precision used"
	@echo "make data                  build (fashion-mnist) or download (platform = kaggle) the competition's files"
	@echo "make data FROM_ZIP=x.zip   unpack and check a zip of the competition's files into data/<competition>"
	@echo "make upload                submit the latest submission to Kaggle (FILE=name picks another)"
	@echo "make lb-sync               read your Kaggle submissions' public/private scores into leaderboard.csv"
	@echo "make adversarial           train-vs-test classifier: OOF ROC AUC, train rows most like test (runs/<c>/adversarial/)"
	@echo "make check                 validate the config against the data; print rows, classes, shape, layout"
	@echo "make folds train ensemble submit COMPETITION=... DATA_DIR=... PRESET=... BACKBONES=... DEVICES=0,1"
	@echo "make all                   data (when missing), then the four stages in order"
	@echo "make predict DATA_DIR=d    the ensemble on d's test data -> submission.csv (OUT=file), as the bundle predicts"
	@echo "make package               bundle/<competition>/: the ensemble as an offline inference bundle + Kaggle kernel metadata"
	@echo "make rehearse              the bundle offline in a fresh process on the test set resampled to the hidden size: images/s, projected time vs the limit"
	@echo "make upload-bundle         the bundle as a private Kaggle dataset (a new version when it exists; bundle.owner)"
	@echo "make push-kernel           kaggle kernels push of the bundle's predict.py kernel; \`make upload\` then submits that version (competition.code_competition)"
	@echo "make tune TRIALS=30        an Optuna study per backbone (WORKER=n for extra workers; OPTUNA_STORAGE=url)"
	@echo "make train EXECUTOR=ray    folds (and \`make tune\` trials) as Ray tasks on \$$RAY_ADDRESS's cluster, else a local one (pip install -e '.[ray]')"
	@echo "make tune-status           trials, best value and params, parameter importances per backbone"
	@echo "make pseudo                folds/<competition>/pseudo.csv: confident test predictions, fold by fold (then retrain)"
	@echo "make distill               one student model per fold learning the selected blend (runs/<c>/student-<backbone>/): OOF, private, images/s beside the blend"
	@echo "make sync                  upload offline W&B runs (after wandb login)"
	@echo "make report                runs/<competition>/report/index.html (after ensemble/submit)"
	@echo "make test-fast             the fast lane: the tests that train no model (not marked slow), before every commit"
	@echo "make test                  the whole test suite (what CI runs)"
	@echo "make docs                  the docs site (MkDocs) into site/, --strict; installs the docs extra into the venv when missing"
	@echo "make bench                 bench-throughput, bench-pipeline, bench-memory in turn (DATA_DIR=...)"
	@echo "make bench-throughput      img/s of compkit's loop vs a bare model.fit, and of predict, per precision and worker count (DACON; PRECISIONS=float32,mixed_bfloat16 WORKERS=1,2)"
	@echo "make bench-input           images/s per core of the CPU side of a GPU run's input pipeline, no model (SIZE=224 CORES=1: taskset)"
	@echo "make bench-pipeline        wall time of folds/train/ensemble/submit and the scores (DACON, PRESET=cpu)"
	@echo "make bench-memory          peak RSS of 10 folds trained in sequence (DACON); SCALE=10000,70000 SIZES=96,224: data-scale mode"
	@echo "make bench-ablation        one fold per recipe variant (bench/ablate.py), TTA scores too (DACON, VARIANTS=a,b)"
	@echo "make clean                 delete folds/ and runs/ of COMPETITION (submissions are kept; refuses an unsafe name)"

setup:
	@# Fashion-MNIST, the embedded default competition, comes from Debian's package.
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null); \
	else echo "note: run 'sudo apt-get install dataset-fashion-mnist' for the default competition (else it is downloaded)"; fi
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev$(if $(GPU),$(comma)gpu)]'

comma := ,

env check folds ensemble all tune-status report pseudo distill lb-sync adversarial package rehearse upload-bundle push-kernel:
	$(PYTHON) -m compkit $@ $(ARGS)

data:
	$(PYTHON) -m compkit data $(ARGS) $(if $(FROM_ZIP),--from-zip "$(FROM_ZIP)")

upload:
	$(PYTHON) -m compkit upload $(ARGS) $(if $(FILE),--file "$(FILE)")

train:
	$(PYTHON) -m compkit train $(ARGS) $(if $(NO_TUNED),--no-tuned)

tune:
	$(PYTHON) -m compkit tune $(ARGS) $(if $(TRIALS),--trials $(TRIALS)) $(if $(WORKER),--worker $(WORKER))

predict:
	$(PYTHON) -m compkit predict $(ARGS) $(if $(OUT),--out "$(OUT)")

submit:
	$(PYTHON) -m compkit submit $(ARGS) $(if $(NAME),--name $(NAME))

sync:
	$(VENV)/bin/wandb sync --yes

# pytest-xdist: two test processes overlap what one leaves idle (process start-up, graph tracing, file I/O) on 2 cores;
# --dist loadgroup keeps each xdist_group (one shared run, one PostgreSQL study) on one worker. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
test:
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The lane to run before every commit: every test not marked slow (no model trained, or one for a few seconds).
test-fast:
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

# The site from docs/ and mkdocs.yml into site/; mkdocstrings reads src/ statically (no TensorFlow import).
# The docs extra is installed into $(VENV) on first use (VENV=path: a venv that has only the docs tools works too).
docs:
	@$(PYTHON) -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null || $(PYTHON) -m pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict --site-dir site

# Benchmarks run on the DACON data (default ../shared/data/dacon-cv-2020, or DATA_DIR) in temporary roots.
BENCH_ARGS = $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(PRESET),--preset $(PRESET)) \
             $(if $(BACKBONES),--backbones "$(BACKBONES)") $(foreach s,$(SET),--set $(s))

# SCALE=10000,30000,70000 (rows): the data-scale mode (bench/scale.py) on Fashion-MNIST written as PNG files; SIZES=96,224 STEPS=20
SCALE_ARGS = --rows $(SCALE) $(if $(SIZES),--sizes $(SIZES)) $(if $(STEPS),--steps $(STEPS))

bench-memory:
	$(if $(SCALE),$(PYTHON) bench/scale.py $(SCALE_ARGS),$(PYTHON) bench/memory.py $(if $(DATA_DIR),--data-dir $(DATA_DIR)))

bench-throughput:
	$(PYTHON) bench/throughput.py $(BENCH_ARGS) $(if $(PRECISIONS),--precisions $(PRECISIONS)) $(if $(WORKERS),--workers $(WORKERS))

# SIZE (px, default 224) and CORES (default: all): the CPU side of the training input pipeline pinned to cores 0..CORES-1.
SIZE ?= 224
CORES ?=
bench-input:
	$(if $(CORES),taskset -c 0-$(shell echo $$(($(CORES) - 1))) )$(PYTHON) bench/input.py --size $(SIZE)

bench-pipeline:
	$(if $(SCALE),$(PYTHON) bench/scale.py $(SCALE_ARGS),$(PYTHON) bench/pipeline.py $(BENCH_ARGS))

bench-ablation:
	$(PYTHON) bench/ablate.py --root runs/ablation $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(VARIANTS),--variants $(VARIANTS))

# One after another (never in parallel: they time each other's CPU otherwise).
bench:
	@echo "== bench/throughput.py"; $(MAKE) --no-print-directory bench-throughput
	@echo "== bench/pipeline.py"; $(MAKE) --no-print-directory bench-pipeline
	@echo "== bench/memory.py"; $(MAKE) --no-print-directory bench-memory

# The name reaches the shell through the environment (no quoting to break); the guard refuses an empty or
# unsafe name before Python starts, and compkit's `clean` checks it again (compkit.config.check_name).
clean: export COMPETITION := $(COMPETITION)
clean:
	@case "$$COMPETITION" in ''|[!A-Za-z0-9]*|*[!A-Za-z0-9._-]*) \
	  echo "make clean: COMPETITION='$$COMPETITION' is not a competition name (letters, digits, . _ -); nothing deleted" >&2; exit 2;; esac
	$(PYTHON) -m compkit clean --competition "$$COMPETITION"
