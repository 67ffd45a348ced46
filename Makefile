# Set-up and reproduction targets. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RESULTS ?= results

.PHONY: install demo test test-fast report clean-results

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

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

report: install
	$(BIN)/mldoctor-report $(RESULTS)

clean-results:
	rm -rf $(RESULTS)/cells $(RESULTS)/hydra $(RESULTS)/sweeps
