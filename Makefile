# Set-up and reproduction targets. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RESULTS ?= results
# Test workers for make test (pytest-xdist): one per core by default; TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
EXAMPLE = $(abspath $(RESULTS))/assess-example

.PHONY: install demo test test-fast test-threads test-slurm lint report bench bench-against bench-low-fpr bench-membership exposure defense-tradeoffs worst-case stealing-curves assess-example assess-null clean-results

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
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# The tests marked planted (an attack's power on a planted or trained case) in one process, once with
# one torch thread and once with two: torch's numerics change with its thread count, and a bar must
# hold at both (docs/contributing.md).
test-threads: install
	status=0; for threads in 1 2; do echo "== OMP_NUM_THREADS=$$threads"; \
		OMP_NUM_THREADS=$$threads $(BIN)/python -m pytest -n 0 -m planted -q || status=1; done; exit $$status

# ruff: lint rules and formatting (line length 120, import order), as configured in pyproject.toml.
lint: install
	$(BIN)/ruff check src tests scripts examples
	$(BIN)/ruff format --check src tests scripts examples

# The SLURM launcher against a real single-node cluster on this machine: scripts/slurm_local.sh
# installs slurm-wlm and munge if missing (Debian, as root) and starts the daemons, which are stopped
# again whatever the test's outcome. `make test` never does this: there the test skips, saying why.
SLURM_LOCAL_DIR ?= /tmp/mldoctor-slurm
test-slurm: install
	SLURM_LOCAL_DIR=$(SLURM_LOCAL_DIR) scripts/slurm_local.sh start
	SLURM_CONF=$(SLURM_LOCAL_DIR)/slurm.conf $(BIN)/python -m pytest tests/test_launchers.py -k slurm -rs; \
		status=$$?; SLURM_LOCAL_DIR=$(SLURM_LOCAL_DIR) scripts/slurm_local.sh stop; exit $$status

report: install
	$(BIN)/mldoctor-report $(RESULTS)

# The training engine's benchmark (docs/performance.md); --quick: within 5 minutes on 2 CPU cores.
bench: install
	$(BIN)/python scripts/bench.py --quick

# The default run and the ML-Doctor selection, timed side by side with commit REV on this machine,
# interleaved (docs/contributing.md): e.g. make bench-against REV=HEAD~1 [ROUNDS=2]. About 30 minutes
# for two rounds on 2 CPU cores.
bench-against: install
	@test -n "$(REV)" || { echo "make bench-against needs REV=<commit> to compare with, e.g. REV=HEAD~1"; exit 2; }
	$(BIN)/python scripts/bench_against.py --against $(REV) --rounds $(or $(ROUNDS),2)

# MemInf against LiRA and RMIA at low FPR on the quick cell, seeds 0-2 (docs/results.md, "Membership at low
# false-positive rates"); about 8 minutes per seed on 2 CPU cores.
bench-low-fpr: install
	$(BIN)/python scripts/bench_low_fpr.py --results-dir $(RESULTS)/low-fpr

# Membership power per second of compute (docs/results.md): every membership attack on the quick cell,
# seeds 0-2, TPR at 1% FPR and AUC against the attacker's seconds beyond the target, Pareto-optimal
# attacks marked; writes frontier.md, frontier.csv and the figure into the results folder.
bench-membership: install
	$(BIN)/python scripts/bench_membership.py --results-dir $(RESULTS)/membership-frontier

# The defense table behind "What to do" in mldoctor-assess's report: one target per defense on the quick
# cell over seeds 0-2: 21 cells, hours on 2 CPU cores (an undefended cell took 8-13 minutes and a
# DP-SGD cell 57, on a shared machine). Summarised into src/mldoctor_bench/report/defense_tradeoffs.csv.
defense-tradeoffs: install
	$(BIN)/mldoctor-bench -m +experiment=defense_tradeoffs results_dir=$(RESULTS)/defense-tradeoffs
	$(BIN)/python scripts/defense_tradeoffs.py $(RESULTS)/defense-tradeoffs

# Defenses judged by the examples they fail to protect (Aerni et al., CCS 2024; docs/defenses.md): the
# canary leave-one-out evaluation of every defense on the quick cell, 16 copies and 50 canaries each;
# then DP-SGD matched to the undefended copies' accuracy (the heuristic defenses' copies are within a
# point of it; its recipe and noise searched on the shadow quarters), evaluated the same way; then the
# table (written into the package for mldoctor-assess's "What to do") beside the population numbers.
WORST = $(RESULTS)/worst-case
worst-case: install
	$(BIN)/mldoctor-bench -m +experiment=worst_case results_dir=$(WORST)
	$(BIN)/python scripts/tune_dp.py --seeds 1 --match-accuracy \
		$$($(BIN)/python scripts/worst_case.py --accuracy-of none $(WORST)) profile=quick seed=0 results_dir=$(WORST)
	$(BIN)/mldoctor-bench +experiment=worst_case $$(cat $(WORST)/tuning/dp_sgd/match.overrides) results_dir=$(WORST)
	$(BIN)/python scripts/worst_case.py $(WORST)

# Model stealing as budget curves (docs/attacks.md): random, Knockoff Nets and ActiveThief queries on
# the quick cell over 3 seeds, then under each output-time defense (seed 0, posteriors released), and
# the report with the curves.
STEAL = $(RESULTS)/stealing-curves
stealing-curves: install
	$(BIN)/mldoctor-bench -m +experiment=stealing_curves results_dir=$(STEAL)
	$(BIN)/mldoctor-bench -m +experiment=stealing_curves threat_model=[blackbox_shadow] seed=0 \
		defense=output_rounding,output_topk,output_labels_only results_dir=$(STEAL)
	$(BIN)/mldoctor-report $(STEAL)

# Which examples leak, to which attacks (docs/results.md): the default attacks plus LiRA (16
# references) and RMIA, each repeated with other references, on the quick cell over 3 seeds and 2
# architectures, then the summary of what they agree on.
exposure: install
	$(BIN)/mldoctor-bench -m +experiment=exposure results_dir=$(RESULTS)/exposure
	$(BIN)/python scripts/exposure_summary.py $(RESULTS)/exposure

# mldoctor-assess on a model trained outside the benchmark (docs/assess.md): the
# embedded digits written as an image folder, a small CNN trained on 1,000 of them by its owner's
# own script, then the assessment and its report.
assess-example: install
	$(BIN)/python examples/assess/make_folder.py $(EXAMPLE)/digits
	cd examples/assess && $(abspath $(BIN))/python train.py $(EXAMPLE)/digits $(EXAMPLE)/model
	PYTHONPATH=$(abspath examples/assess) $(BIN)/mldoctor-assess $(ASSESS_ARGS) \
		data.root=$(EXAMPLE)/digits data.attributes=$(EXAMPLE)/digits/attributes.csv \
		members=$(EXAMPLE)/model/members.txt results_dir=$(EXAMPLE)

# The same model assessed on a planted null (examples/assess/planted_null.py): its training images left
# out of the folder and 500 images it never saw listed as its members, seeds 0, 1 and 2. Every run
# must judge membership low; the assessment with the true members file (assess-example) must not.
ASSESS_ARGS = model.weights=$(EXAMPLE)/model/net.safetensors model.factory=tiny_net:make_net model.image_size=28 \
	model.in_channels=1 'model.normalize.mean=[0.1307]' 'model.normalize.std=[0.3081]' dataset=folder
assess-null: assess-example
	$(BIN)/python examples/assess/planted_null.py $(EXAMPLE)/digits $(EXAMPLE)/model $(EXAMPLE)/null
	for seed in 0 1 2; do PYTHONPATH=$(abspath examples/assess) $(BIN)/mldoctor-assess $(ASSESS_ARGS) \
		data.root=$(EXAMPLE)/null/digits data.attributes=$(EXAMPLE)/null/digits/attributes.csv \
		members=$(EXAMPLE)/null/members.txt seed=$$seed results_dir=$(EXAMPLE)/null/results || exit 1; done

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
