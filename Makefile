# marketplace: every entry point an ML engineer needs. `make help` lists them.
# Each target installs what it needs first (.venv from requirements.lock), so a fresh
# clone needs nothing but Python 3.11 and make.

SHELL := /bin/bash
.DEFAULT_GOAL := help
.SHELLFLAGS := -eu -o pipefail -c

PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Stages run `python -m pipeline.<stage>`, commands `python -m marketplace <command>` (the
# `marketplace` console script), and `dvc`: all must come from the venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv browser demo test test-fast lint format bench lock clean ui serve promote rollback evaluate \
	monitor docs docs-serve

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the pinned dependencies (idempotent)

demo: venv ## Main job on the built-in sample: generate it (if data/ is absent), dvc repro
	@if [ ! -d data ]; then $(PY) -m marketplace sample --out data; fi
	dvc add --quiet data
	dvc repro
	dvc metrics show metrics/train_vision.json metrics/train_text.json \
		metrics/train_combined.json metrics/baselines.json metrics/index.json
	@# Promote through the gate; a refusal leaves production as it was (and is not an error).
	$(PY) -m marketplace promote || echo "promotion refused: production unchanged"
	@echo "--- example query: a text, against models:/marketplace-combined@production"
	$(PY) -m marketplace predict --text "Wooden dining table with four chairs" --price 80 -k 3
	@echo "--- serve it: make serve, then e.g."
	@echo "  curl -F text='PS4 console with two controllers' http://127.0.0.1:8000/predict"
	@echo "  curl -F image=@$$(ls outputs/images/*.jpg | head -1) -F k=5 http://127.0.0.1:8000/similar"

# The browser tests (tests/serving/browser) drive Debian's Chromium with Playwright; as root
# `make test` installs it when missing (~25 s, ~440 MB), otherwise those tests skip and say why.
browser: ## Install Chromium for the browser tests (apt-get, as root, when missing)
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Chromium for the browser tests (apt-get)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium >/dev/null; } \
		|| echo "could not install Chromium: the browser tests will skip"; \
	else \
		echo "no Chromium and not root: the browser tests will skip" \
			"(apt-get install -y --no-install-recommends chromium)"; \
	fi

test: venv browser ## Run the whole test suite (unit, data, integration, browser, real data where present)
	$(PY) -m pytest

test-fast: venv ## Unit and cheap serving tests: no stack, browser, Ray, servers or DVC runs
	$(PY) -m pytest -m "not slow"

lint: venv ## Lint, check formatting (ruff) and the layers' import contracts (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: venv ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv ## Benchmarks on the real data (../shared/data/marketplace); see BENCHMARKS.md
	$(PY) bench/bench_cleaning.py
	$(PY) bench/bench_training.py
	$(PY) bench/bench_serving.py
	$(PY) bench/bench_faiss.py
	$(PY) bench/bench_scale.py faiss
	$(PY) bench/bench_scale.py embed

serve: venv ## The API on http://127.0.0.1:8000 (models:/marketplace-combined@production)
	$(PY) -m marketplace serve --host 127.0.0.1 --port 8000

promote: venv ## Move the production alias to the newest combined version, through the gate
	$(PY) -m marketplace promote $(if $(VERSION),--version $(VERSION)) $(if $(FORCE),--force)

evaluate: venv ## Score an export per query kind: FROM=path [MODEL=models:/...] or [URL=http://...]
	@test -n "$(FROM)" || { echo "usage: make evaluate FROM=path/to/export [MODEL=models:/name@alias | URL=http://host:port]"; exit 2; }
	$(PY) -m marketplace evaluate --from "$(FROM)" $(if $(MODEL),--model "$(MODEL)") $(if $(URL),--url "$(URL)")

monitor: venv ## Drift monitor: production's logged answers vs its training reference (exit 1 on an alert)
	$(PY) -m marketplace monitor $(if $(VERSION),--version $(VERSION)) $(if $(HOURS),--hours $(HOURS))

rollback: venv ## Move the production alias back to the previous production version
	$(PY) -m marketplace promote --rollback

ui: venv ## MLflow UI on http://127.0.0.1:5000 over the project's tracking store (prints where the training runs are)
	$(PY) -m marketplace ui --host 127.0.0.1 --port 5000

# The site's reference pages are generated from the code at build time (docs/hooks.py);
# --strict fails on any warning: a broken link, a page missing from the nav, a failed --help.
docs: venv ## Build the documentation site into site/ (mkdocs build --strict)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: venv ## The documentation site on http://127.0.0.1:8001, rebuilt as docs/ changes
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

lock: venv ## Re-freeze requirements.lock from the current .venv
	@{ sed -n '1,4p' requirements.lock; $(PY) -m pip freeze --exclude-editable \
		| grep -v '^marketplace' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.new
	@mv requirements.lock.new requirements.lock

clean: ## Remove derived files (outputs/, reports/, site/); keeps data/ and .venv
	rm -rf outputs reports site .pytest_cache .ruff_cache

# --- The team stack (issue 13): PostgreSQL + S3 + mlflow server on 127.0.0.1, no Docker ---
.PHONY: stack stack-down stack-status stack-dvc

stack: venv ## Start PostgreSQL, an S3 server and mlflow server (state in .stack/); prints the URIs
	$(PY) -m marketplace stack up

stack-down: venv ## Stop what `make stack` started (by the PIDs in .stack/stack.json)
	$(PY) -m marketplace stack down

stack-status: venv ## Which stack services run, on which ports
	$(PY) -m marketplace stack status

stack-dvc: venv ## Make the stack's S3 (bucket dvc) this clone's default DVC remote
	$(PY) -m marketplace stack dvc-remote
