# Two commands matter: `make demo` serves the example chat, `make test` runs the tests.
# Both create .venv and install the package (with its dev extras) when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BACKEND ?= asyncio
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs check clean bench soak

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	cd examples/chat && ../../$(BIN)/python manage.py migrate --noinput
	cd examples/chat && ../../$(BIN)/python manage.py runserver $(HOST):$(PORT) \
		--backend $(BACKEND)

# The package's tests, the browser client's (Node's own runner, no npm packages; its mock
# clock is still "experimental" in Node 20, hence the warning filter), then the chat
# example's (its own settings, browser tests included).
test: $(STAMP)
	$(BIN)/python -m pytest
	node --disable-warning=ExperimentalWarning --test tests/js/
	cd examples/chat && ../../$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy --strict on channels/ and tests/typecheck/ (downstream-style code pinning what the API
# gives users), and on the chat example with its own settings; pyright (strict) on tests/typecheck/ too, as a pyright user's project sees it;
# then pyright's completeness check of the public API, which fails below 100%.
# PYTHONPATH: pyright cannot follow the editable install's import hook (it would verify
# typeshed's stubs for upstream Channels instead); PATH: it asks `python` for the
# environment's import paths, which must be this venv's.
typecheck: $(STAMP)
	$(BIN)/mypy
	cd examples/chat && ../../$(BIN)/mypy
	$(BIN)/basedpyright
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHONPATH="$(CURDIR)" \
		$(BIN)/basedpyright --verifytypes channels --ignoreexternal

# The documentation site, warnings as errors (CI runs this).
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

check: test lint typecheck docs

# Side-by-side benchmarks against upstream Channels (not part of CI): builds and caches
# both environments under benchmarks/.venvs. Options go in ARGS, e.g. ARGS=--quick.
bench:
	$(PYTHON) benchmarks/run.py $(ARGS)

# The reliability suite: real servers on asyncio and trio, real faults (churn, abrupt
# disconnects, bad frames, Redis restarts, a stop with a stuck client); prints a table of
# figures and fails on any FAIL. A few minutes; SOAK=short is the short form CI runs.
# Options go in ARGS, e.g. ARGS="--backend trio --probe churn".
soak: $(STAMP)
	$(BIN)/python -m soak $(if $(filter short,$(SOAK)),--quick) $(ARGS)

clean:
	rm -rf $(VENV) examples/chat/db.sqlite3 examples/chat/test_db.sqlite3 benchmarks/.venvs
