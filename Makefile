# cnnclf: `make demo` and `make test` work on a fresh clone; they create .venv and install first.
# `make help` lists every target.

VENV   ?= .venv
PYTHON ?= python3
# The CPU wheel; GPU users: make install TORCH=torch (PyPI's Linux wheel is a CUDA build).
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
DATA   ?= data/seed
SHARED ?= ../shared
DATASET ?= mnist
CONFIG ?= configs/$(DATASET)_fixed.yaml
SWEEP  ?= configs/sweeps/digits_report_ablations.yaml
# make report: the recipes that train in about 15 minutes in all on a 2-core CPU; a config's dataset is its name's
# first part (mnist_fast -> $(DATA)/MNIST). REPORT_FIT_ARGS="--config presets/gpu" for a GPU.
REPORT_CONFIGS ?= mnist_fast orl_best cifar_fast
REPORT_FIT_ARGS ?=
REPORT_DIR ?= runs/report

.DEFAULT_GOAL := help
.PHONY: help install demo test test-all lint format seed-data bench-load bench-throughput bench-accuracy fit \
	test-ckpt sweep report tensorboard notebook notebook-strip clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-17s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed ## create .venv and install cnnclf with its dev tools

demo: install ## train and test a CNN on scikit-learn's bundled digits (no download)
	$(BIN)/cnnclf fit --config digits --trainer.enable_progress_bar false

test: install ## the test suite (fast; what CI runs)
	$(BIN)/python -m pytest -q

test-all: install ## every test, the slow ones too
	$(BIN)/python -m pytest -q -m ""

lint: install ## ruff
	$(BIN)/ruff check cnnclf tests bench

format: install ## ruff format and import order
	$(BIN)/ruff check --fix --select I cnnclf tests bench
	$(BIN)/ruff format cnnclf tests bench

seed-data: ## write the report-format pickles from $(SHARED)/data into $(DATA) (git-ignored)
	@test -f $(SHARED)/data/make_seed_pickles.py || { echo "make seed-data needs $(SHARED)/data/make_seed_pickles.py \
	(the course's data beside this repository; SHARED=folder names another). With the course's MNIST, ORL and \
	CIFAR files, put them in one folder and run make fit DATASET=mnist DATA=folder, or pass --data.path FILE." >&2; exit 2; }
	@$(MAKE) --no-print-directory install
	$(BIN)/python $(SHARED)/data/make_seed_pickles.py $(DATA)

bench-load: install ## load time and peak memory of the course-format int64 MNIST pickle
	$(BIN)/python bench/load_mnist.py

bench-throughput: install ## report loop vs plain PyTorch vs cnnclf fit, side by side (needs seed-data)
	$(BIN)/python bench/throughput.py --data $(DATA)

bench-accuracy: install ## time to accuracy of the fixed and best recipes on the real data (needs seed-data)
	$(BIN)/python bench/time_to_accuracy.py --data $(DATA) configs/*_fixed.yaml configs/*_fast.yaml configs/*_best.yaml

fit: install ## train: make fit DATASET=mnist|orl|cifar [CONFIG=...] [DATA=folder]
	$(BIN)/cnnclf fit --config $(CONFIG) --data.path $(DATA)/$(shell echo $(DATASET) | tr a-z A-Z)

test-ckpt: install ## test the newest best checkpoint: make test-ckpt DATASET=mnist [CKPT=best|last|file]
	$(BIN)/cnnclf test --config $(CONFIG) --data.path $(DATA)/$(shell echo $(DATASET) | tr a-z A-Z) --ckpt_path $(or $(CKPT),best)

sweep: install ## run a sweep, resuming where it stopped: make sweep [SWEEP=configs/sweeps/....yaml]
	$(BIN)/cnnclf-sweep $(SWEEP)

report: install ## train what REPORT_CONFIGS lack on the seed data, then write $(REPORT_DIR)/report.md and .html
	@for config in $(REPORT_CONFIGS); do \
	  $(BIN)/cnnclf report $$config --dry-run 2>/dev/null || \
	    $(BIN)/cnnclf fit --config $$config $(REPORT_FIT_ARGS) --data.path $(DATA)/$$(echo $${config%%_*} | tr a-z A-Z) \
	      --trainer.enable_progress_bar false --model_summary.max_depth 0 || exit 1; \
	done
	$(BIN)/cnnclf report $(REPORT_CONFIGS) --original --output $(REPORT_DIR)

tensorboard: install ## open TensorBoard on runs/
	$(BIN)/tensorboard --logdir runs

$(BIN)/.notebook: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[notebook]"
	touch $@

notebook: $(BIN)/.notebook ## open JupyterLab on notebooks/ (installs jupyterlab into .venv the first time)
	$(BIN)/jupyter lab notebooks

notebook-strip: $(BIN)/.notebook ## clear notebook outputs before committing
	$(BIN)/jupyter nbconvert --clear-output --ClearMetadataPreprocessor.enabled=True \
	  --ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec --ClearMetadataPreprocessor.preserve_nb_metadata_mask=language_info --inplace notebooks/*.ipynb

clean: ## remove runs/ and caches (keeps .venv and data/)
	rm -rf runs lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
