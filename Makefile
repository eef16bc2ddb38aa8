# One set of entry points for the README, .ci/run and developers.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck check docs docs-serve bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## demo: run the durable-workflow demo (SQLite by default; DATABASE_URL=postgresql://... to switch)
demo: $(STAMP)
	$(BIN)/python examples/data_pipeline/demo.py

# Tests run in TEST_WORKERS processes (pytest-xdist): most of a test's time is spent waiting
# (on the database, a lease, a child process), so more processes than cores pay off.
# TEST_WORKERS=0 runs them in this process, one at a time.
TEST_WORKERS ?= 4
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

## test: the whole test suite, on SQLite and PostgreSQL
test: $(STAMP)
	$(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS)

## test-fast: the suite without the reliability tests (crash, restart, load): for development
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PARALLEL) -m "not reliability" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## typecheck: mypy --strict on the package, then pyright (standard) over examples/ as a user sees it
typecheck: $(STAMP)
	$(BIN)/mypy pgqrs_sqla
	$(BIN)/pyright

check: lint typecheck test

## docs: build the docs site into site/ (strict: a broken link or reference fails)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

## docs-serve: serve the docs site on http://127.0.0.1:8000, rebuilt on every change
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

## bench: benchmarks (figures and ratios to the raw-driver reference)
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache .mypy_cache .ruff_cache
