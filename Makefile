# Everything runs inside .venv, created on first use from Python 3.11+.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-browser browser lint schema bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# A venv made before the distribution was renamed holds it as "batchflow": one copy only.
	$(BIN)/python -m pip uninstall --quiet --yes batchflow 2>/dev/null || true
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	bash scripts/demo.sh

test: install
	$(BIN)/python -m pytest -n auto

# The HTML report's chart, drawn in a real headless browser: Debian's Chromium, installed
# first if it is missing (as root, from the system's packages). `make test` runs the same
# test, and skips it where no browser is installed.
test-browser: install browser
	$(BIN)/python -m pytest tests/test_evals.py -k browser -v

browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

lint: install
	$(BIN)/ruff check batchflow tests bench docs/examples
	$(BIN)/ruff format --check batchflow tests bench docs/examples
	$(BIN)/mypy

schema: install
	$(BIN)/batchflow schema --output schemas/pipeline.schema.json
	$(BIN)/python -m batchflow.spec.reference docs/spec.md

# Compiled first, as pip compiles an installed package: start-up is then measured as users
# have it, also where PYTHONDONTWRITEBYTECODE keeps Python from caching what it compiles.
bench: install
	$(BIN)/python -m compileall -q batchflow
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .demo out .pytest_cache
