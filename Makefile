# mnistkit: `make all` runs the pipeline, `make test` runs the tests. `make help` lists targets.
# Offline: MNISTKIT_MIRROR=file://$PWD/../shared/mnist make all
# Another dataset: make all DATASET=fashion-mnist (`mnistkit datasets` lists them)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MNISTKIT := $(BIN)/mnistkit
INSTALLED := $(VENV)/.installed

# Training settings; changing one retrains (make all PRESET=cnn, make all EPOCHS=4).
# MODEL=X alone (logreg, mlp or cnn) means the preset named X, as `mnistkit train --model X`
# does; with PRESET=Y too, preset Y with model X, as `--preset Y --model X`.
# VAL_SIZE training images are held out for the validation curve (VAL_SIZE=0 trains on all).
PRESET ?= fast
MODEL ?=
EPOCHS ?=
SEED ?= 0
VAL_SIZE ?= 5000
TRAIN_ARGS ?=
preset_given := $(if $(strip $(PRESET)),$(filter-out file,$(origin PRESET)))
train_args := $(if $(MODEL),--model $(MODEL)) $(if $(MODEL),$(if $(preset_given),--preset $(PRESET)),$(if $(strip $(PRESET)),--preset $(PRESET))) \
	--seed $(SEED) --val-size $(VAL_SIZE) \
	$(if $(EPOCHS),--epochs $(EPOCHS)) $(TRAIN_ARGS)

# The dataset: MNIST's files stay where they always were; every other dataset has its own
# data/NAME/, models/NAME/ and reports/NAME/, so datasets never overwrite each other.
DATASET ?= mnist
ifeq ($(DATASET),mnist)
RAW_DIR := data/raw
NPZ := data/mnist.npz
MODELS := models
REPORTS := reports
else
RAW_DIR := data/$(DATASET)/raw
NPZ := data/$(DATASET)/$(DATASET).npz
MODELS := models/$(DATASET)
REPORTS := reports/$(DATASET)
endif
# Each dataset's four files by their canonical names (as `mnistkit datasets NAME` lists them).
ifneq ($(filter emnist-%,$(DATASET)),)
RAW_NAMES := $(foreach split,train test,$(DATASET)-$(split)-images-idx3-ubyte.gz $(DATASET)-$(split)-labels-idx1-ubyte.gz)
else ifeq ($(DATASET),qmnist)
RAW_NAMES := $(foreach split,train test,qmnist-$(split)-images-idx3-ubyte.gz qmnist-$(split)-labels-idx2-int.gz)
else
RAW_NAMES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
endif
RAW := $(addprefix $(RAW_DIR)/,$(RAW_NAMES))
# EMNIST's 562 MB zip, which holds every EMNIST split, is kept here and downloaded once.
CACHE := data/cache
CKPT := $(MODELS)/model.safetensors
HISTORY := $(MODELS)/model.history.jsonl
PICTURES := $(REPORTS)/mistakes.png $(REPORTS)/confusion.png $(REPORTS)/curves.png

.DEFAULT_GOAL := all
# A failed recipe's changed targets are deleted, so that no half-made file looks up to date.
# Not train's: make deleted the checkpoint or the history of a run that failed before touching
# them (`make all PRESET=nope`). A run that stops midway (Ctrl-C) leaves the checkpoint of its
# last epoch and its state beside it; while that state is there, train runs again and resumes.
# Nor fetch's: it writes each file whole and verified, and make deleted those a fetch had
# verified when a later one failed or was interrupted (the next run fetched them all again).
.DELETE_ON_ERROR:
.PRECIOUS: $(CKPT) $(HISTORY) $(RAW)
UNFINISHED := $(if $(wildcard $(CKPT).resume),FORCE)
# Train again when the history is gone too: the rule makes both files, and make would find the
# checkpoint up to date for eval and the samples before curves.png asked for the history.
NO_HISTORY := $(if $(wildcard $(HISTORY)),,FORCE)

.PHONY: all help venv test test-slow test-browser serve chaos fuzz lint bench docs clean

all: $(REPORTS)/metrics.json $(REPORTS)/samples.png $(REPORTS)/predictions.tsv $(PICTURES) ## run the whole pipeline (DATASET=$(DATASET))

help: ## list the targets
	@grep -E '^[a-zA-Z_./$$()% -]+&?:.*## ' $(MAKEFILE_LIST) | sed -e 's/ *&\?:.*## /\t/' \
		-e 's|$$(RAW)|$(RAW_DIR)/*.gz|; s|$$(MODELS)/%.safetensors $$(MODELS)/%.history.jsonl|$(CKPT)|' \
		-e 's|$$(REPORTS)|$(REPORTS)|; s|$$(NPZ)|$(NPZ)|; s|$$(DATASET)|$(DATASET)|' \
		| awk -F '\t' '{ name[NR] = $$1; what[NR] = $$2; if (length($$1) > width) width = length($$1) } \
		END { for (i = 1; i <= NR; i++) printf "%-" width + 2 "s%s\n", name[i], what[i] }'

venv: $(INSTALLED) ## create .venv with mnistkit and its dev tools

# Two makes at once in a fresh clone (a CI job started twice) both built .venv, and one
# failed inside pip: where flock is (Linux), the second waits for the first and finds it made.
SERIALLY := $(if $(shell command -v flock 2> /dev/null),flock $(VENV).lock)

$(INSTALLED): pyproject.toml
	@$(SERIALLY) sh -c '[ -f $@ ] && [ $@ -nt pyproject.toml ] || { set -x; \
		$(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --upgrade pip \
		&& $(BIN)/pip install --quiet -e ".[dev]" && touch $@; }'

$(RAW) &: | $(INSTALLED) ## download and verify the dataset's four files
	$(MNISTKIT) fetch --dataset $(DATASET) --out $(RAW_DIR) --cache $(CACHE)

$(NPZ): $(RAW) | $(INSTALLED) ## parse the IDX files into one .npz
	$(MNISTKIT) parse-to-npz $(RAW_DIR) --dataset $(DATASET) -o $@

# The arguments a model was trained with, and its checkpoint's checksum, are written beside
# it once training has finished; other arguments, or none recorded, train again. They are
# compared as make reads this file, not by a rule that always runs, so that `make -n` and
# `make -q` say truly what would run. A checkpoint in its place that make did not train (one
# trained by hand with -o $(CKPT), which the reports would describe as make's, finished or
# stopped midway, or one with no record beside it) stops make before it trains over it.
# While make trains, two more lines say so: the checksum of the checkpoint that was there,
# with the pid of the shell that trains, and the new arguments. That shell outlives train's
# Ctrl-C (and make's SIGKILL) to write the record the run stands for: a run that wrote its
# checkpoint (to its end, or midway with its .resume beside it) its own model's; one that
# wrote nothing (refused, failed, stopped in its first epoch) the record before. Only where
# that shell was killed too does make, reading the file, write the record itself.
TRAIN_ARGS_FILE := $(MODELS)/train-args.txt
train_record = $(strip $(shell sed -n $(1)p $(TRAIN_ARGS_FILE) 2>/dev/null))
quoted = '$(subst ','\'',$(1))'
differ = $(subst $(1),,$(2))$(subst $(2),,$(1))
checksum = $$(if [ -f $(CKPT) ]; then cksum < $(CKPT); else echo none; fi)
new_args := $(strip $(train_args))
training_over := $(strip $(shell sed -n 's/^training over \(.*\) by [0-9]*$$/\1/p' $(TRAIN_ARGS_FILE) 2>/dev/null))
trainer := $(strip $(shell sed -n 's/^training over .* by \([0-9]*\)$$/\1/p' $(TRAIN_ARGS_FILE) 2>/dev/null))
trainer_gone := $(if $(trainer),$(shell kill -0 $(trainer) 2> /dev/null || echo gone))
ckpt_sum := $(if $(wildcard $(CKPT)),$(strip $(shell cksum < $(CKPT))))
written := $(if $(trainer_gone),$(call differ,$(training_over),$(or $(ckpt_sum),none)))
kept_args := $(if $(written),$(call train_record,4),$(call train_record,1))
kept_sum := $(if $(written),$(ckpt_sum),$(call train_record,2))
# The record as it stands, or none: lines for the shell to write back.
record = $(if $(kept_sum),printf '%s\n%s\n' $(call quoted,$(kept_args)) '$(kept_sum)' > $(TRAIN_ARGS_FILE),$(if \
	$(kept_args),printf '%s\n' $(call quoted,$(kept_args)) > $(TRAIN_ARGS_FILE),rm -f $(TRAIN_ARGS_FILE)))
ifneq ($(trainer_gone),)
$(shell $(record))
endif
recorded := $(shell test -f $(TRAIN_ARGS_FILE) && echo yes)
FOREIGN := $(if $(ckpt_sum),$(if $(kept_sum),$(call differ,$(kept_sum),$(ckpt_sum)),$(if $(recorded),,none recorded)))
RETRAIN := $(if $(call differ,$(kept_args),$(new_args))$(FOREIGN),FORCE)
foreign_checkpoint := make: $(CKPT) is not the model make trained ($(if $(kept_sum),its checksum is not \
	the one in $(TRAIN_ARGS_FILE),there is no $(TRAIN_ARGS_FILE))); move it elsewhere to keep it, or delete \
	it and make trains its own
train_command = $(strip $(MNISTKIT) train $(NPZ) -o $(CKPT) --history $(HISTORY) $(train_args))

# A pattern rule, not a grouped target (`&:`): GNU make 4.3's `make -n` lists nothing of what
# depends on a grouped target it would remake, and of a pattern rule's files only what depends
# on the one it reached first (so curves.png names the checkpoint too).
# Its pattern takes any name, but the rule trains $(CKPT) alone: another name asked for is
# refused before anything runs (`make models/cnn.safetensors` trained models/model.safetensors,
# and again each time; models/fashion-mnist/model.safetensors, MNIST's model there).
other_models := $(filter-out $(CKPT) $(HISTORY),$(filter $(MODELS)/%.safetensors $(MODELS)/%.history.jsonl,$(MAKECMDGOALS)))
$(if $(other_models),$(error make trains $(CKPT) for DATASET=$(DATASET), not $(firstword $(other_models)); \
	for another dataset: make all DATASET=NAME; for another file: $(MNISTKIT) train $(NPZ) -o FILE))
# -o or --history in TRAIN_ARGS came after make's own and won: the model went elsewhere,
# make trained again every time, and curves.png drew the history of the model before.
own_outputs := $(filter -o% --output --output=% --history --history=%,$(TRAIN_ARGS))
$(if $(own_outputs),$(error TRAIN_ARGS: make names the checkpoint ($(CKPT)) and its history \
	itself, drop $(firstword $(own_outputs)); for a model of your own: $(MNISTKIT) train $(NPZ) -o FILE))
$(MODELS)/%.safetensors $(MODELS)/%.history.jsonl: $(NPZ) $(RETRAIN) $(UNFINISHED) $(NO_HISTORY) | $(INSTALLED) ## train the model
	@$(if $(FOREIGN),echo '$(foreign_checkpoint)' >&2; exit 1)
	@mkdir -p $(MODELS); before="$(checksum)"; \
	printf '%s\n%s\ntraining over %s by %s\n%s\n' $(call quoted,$(kept_args)) '$(kept_sum)' "$$before" $$$$ \
		$(call quoted,$(new_args)) > $(TRAIN_ARGS_FILE); \
	trap : INT TERM HUP; echo $(call quoted,$(train_command)); $(train_command); status=$$?; after="$(checksum)"; \
	if [ "$$after" != "$$before" ]; then printf '%s\n%s\n' $(call quoted,$(new_args)) "$$after" > $(TRAIN_ARGS_FILE); \
	else $(record); fi; exit $$status

$(REPORTS)/metrics.json: $(CKPT) $(NPZ) | $(INSTALLED) ## evaluate on the test set
	@mkdir -p $(REPORTS)
	$(MNISTKIT) eval $(CKPT) $(NPZ) --json $@

# The exported PNGs are made with samples.png, and predictions.tsv reads them: when any of
# them is gone (rm reports/samples/*, or one), samples.png is made again, or predict would
# find no image, or rows of images no longer there would stand.
EXPORTED := $(shell cut -f1 $(REPORTS)/predictions.tsv 2>/dev/null)
SAMPLES_GONE := $(if $(or $(if $(wildcard $(REPORTS)/samples/*.png),,none),$(filter-out $(wildcard $(EXPORTED)),$(EXPORTED))),FORCE)
$(REPORTS)/samples.png: $(NPZ) $(CKPT) $(SAMPLES_GONE) | $(INSTALLED) ## a grid of test images with predictions
	@rm -rf $(REPORTS)/samples && mkdir -p $(REPORTS)/samples
	$(MNISTKIT) render-samples $(NPZ) -o $@ --model $(CKPT) --export-dir $(REPORTS)/samples > /dev/null

$(REPORTS)/mistakes.png: $(NPZ) $(CKPT) | $(INSTALLED) ## the model's most confident mistakes
	@mkdir -p $(REPORTS)
	$(MNISTKIT) render-samples $(NPZ) -o $@ --model $(CKPT) --select mistakes --count 32

$(REPORTS)/confusion.png: $(REPORTS)/metrics.json | $(INSTALLED) ## the confusion matrix as a heat map
	$(MNISTKIT) render-confusion --metrics $(REPORTS)/metrics.json -o $@

$(REPORTS)/curves.png: $(HISTORY) $(CKPT) | $(INSTALLED) ## loss and accuracy per epoch
	@mkdir -p $(REPORTS)
	$(MNISTKIT) render-curves $(HISTORY) -o $@

$(REPORTS)/predictions.tsv: $(REPORTS)/samples.png $(CKPT) | $(INSTALLED) ## predict the exported sample PNGs
	$(MNISTKIT) predict $(CKPT) $(REPORTS)/samples/*.png --output $@

test: $(INSTALLED) ## run the fast tests and the linter
	$(BIN)/pytest -q -m "not slow" -n auto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-slow: $(INSTALLED) ## run the slow tests: real data, kill harness, load
	$(BIN)/pytest -q -m "slow and not browser"

BROWSER_INSTALLED := $(VENV)/.installed-browser

$(BROWSER_INSTALLED): $(INSTALLED)
	$(BIN)/pip install --quiet -e '.[dev,browser]'
	touch $@

test-browser: $(BROWSER_INSTALLED) ## the serve page in headless Chromium (apt-get install chromium chromium-driver)
	$(BIN)/pytest -q -m browser

# The port and address of `make serve` (make serve PORT=8080; HOST=0.0.0.0 lets other machines
# in). HOST is taken from make's command line only: a shell's own HOST is the machine's name.
PORT ?= 8000
HOST := 127.0.0.1

serve: $(CKPT) | $(INSTALLED) ## draw a digit in the browser and watch the trained model read it (PORT=8000, HOST=127.0.0.1)
	$(MNISTKIT) serve $(CKPT) --host $(HOST) --port $(PORT)

# Kills per stage in `make chaos` (make chaos KILLS=100); the seed is MNISTKIT_CHAOS_SEED.
KILLS ?= 20

chaos: $(INSTALLED) ## SIGKILL each stage KILLS times at random moments, run two at once, load predict
	MNISTKIT_CHAOS_KILLS=$(KILLS) $(BIN)/pytest -q -m slow tests/test_crash.py tests/test_concurrency.py

fuzz: $(INSTALLED) ## deep fuzz: 10,000 examples for each test_fuzz_* property
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -k fuzz

lint: $(INSTALLED) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The bench's aims are MNIST's (99% in seconds, the people-style digits drawn from MNIST's),
# and the README's pictures are MNIST's.
ifeq ($(DATASET),mnist)
bench: $(NPZ) | $(INSTALLED) ## measure training, predict and serve speed on MNIST
	$(BIN)/python scripts/bench_train.py $(NPZ) --raw $(RAW_DIR)
	$(BIN)/python scripts/bench_predict.py
	$(BIN)/python scripts/bench_serve.py

docs: all $(BROWSER_INSTALLED) ## redraw the README's pictures (docs/*.png) with the commands it documents
	cp reports/mistakes.png reports/confusion.png reports/curves.png reports/samples.png docs/
	MNISTKIT_SERVE_SCREENSHOT=docs/serve.png MNISTKIT_SERVE_MODEL=$(CKPT) MNISTKIT_REQUIRE_BROWSER=1 \
		$(BIN)/pytest -q -m browser
	$(MNISTKIT) train $(NPZ) -o models/2d.safetensors --preset embedding
	$(MNISTKIT) render-embedding models/2d.safetensors $(NPZ) -o docs/embedding.png
	$(MNISTKIT) train $(NPZ) -o models/2d-3v8.safetensors --preset embedding --digits 3,8
	$(MNISTKIT) render-embedding models/2d-3v8.safetensors $(NPZ) -o docs/embedding-3v8.png
	$(MNISTKIT) train $(NPZ) -o models/logreg.safetensors --preset logreg
	$(MNISTKIT) render-weights models/logreg.safetensors -o docs/weights.png
else
bench:
	@echo "make bench: measures MNIST, not DATASET=$(DATASET); run it without DATASET" >&2; exit 2
docs:
	@echo "make docs: draws the README's MNIST pictures, not DATASET=$(DATASET); run it without DATASET" >&2; exit 2
endif

clean: ## remove data, models, reports (keeps .venv)
	rm -rf data models reports

FORCE:
