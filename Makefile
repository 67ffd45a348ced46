# Set-up and reproduction targets. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RESULTS ?= results

.PHONY: install demo test test-fast report bench bench-low-fpr clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-installs only when the packaging metadata changed; otherwise a no-op.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/mldoctor-bench results_dir=$(RESULTS)
	$(BIN)/mldoctor-report $(RESULTS)

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

report: install
	$(BIN)/mldoctor-report $(RESULTS)

# The training engine's benchmark (docs/performance.md); --quick: within 5 minutes on 2 CPU cores.
bench: install
	$(BIN)/python scripts/bench.py --quick

# MemInf against LiRA and RMIA at low FPR on the quick cell, seeds 0-2 (README, "Membership at low
# false-positive rates"); about 8 minutes per seed on 2 CPU cores.
bench-low-fpr: install
	$(BIN)/python scripts/bench_low_fpr.py --results-dir $(RESULTS)/low-fpr

# One target per paper table or figure: a Hydra experiment (conf/experiment/) swept into
# $(RESULTS)/<experiment>, then the report. `<target>-small` runs the laptop-sized rehearsal on the
# embedded data. Finished cells are skipped, so targets that share an experiment share its runs.
# Extra overrides: make figure2 ARGS="hydra/launcher=slurm data.root=/data".
GRID_FIGURES    := table3 table4 table5 figure2 figure3 figure4 figure5 figure6 figure7 figure9
OVERFIT_FIGURES := figure8
PAPER_TARGETS   := $(GRID_FIGURES) $(OVERFIT_FIGURES)
.PHONY: paper $(PAPER_TARGETS) $(addsuffix -small,$(PAPER_TARGETS))

define reproduce
	$(BIN)/mldoctor-bench -m +experiment=$(1) results_dir=$(RESULTS)/$(1) $(ARGS)
	$(BIN)/mldoctor-report $(RESULTS)/$(1)
endef

$(GRID_FIGURES): install
	$(call reproduce,paper_grid)
$(addsuffix -small,$(GRID_FIGURES)): install
	$(call reproduce,paper_grid_small)
$(OVERFIT_FIGURES): install
	$(call reproduce,overfitting)
$(addsuffix -small,$(OVERFIT_FIGURES)): install
	$(call reproduce,overfitting_small)
paper: $(PAPER_TARGETS)

clean-results:
	rm -rf $(RESULTS)/cells $(RESULTS)/hydra $(RESULTS)/sweeps
