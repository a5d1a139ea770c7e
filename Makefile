# switchyard: two commands for a fresh clone, `make demo` and `make test`.
# Each sets up what it needs: a virtualenv with the package, Packer (apt, when missing) and,
# for the tests, Debian's Chromium for the UI test and Debian's PostgreSQL for the stack on
# PostgreSQL (switchyard/stack/postgres.py finds it in /usr/lib/postgresql/<version>/bin).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Azurite, Microsoft's storage emulator (npm), in a folder of the project's own (gitignored): the local
# stack's blob storage, where images are uploaded as page blobs before they are published.
AZURITE_VERSION := 3.35.0
AZURITE_DIR     := .tools/azurite
AZURITE         := $(AZURITE_DIR)/node_modules/.bin/azurite-blob

.PHONY: demo test lint format setup tools tools-test azurite bench clean

demo: setup
	$(BIN)/switchyard demo

# Four workers, one test file each at a time: the end-to-end files mostly wait on real traffic,
# analysis windows and lock leases, so four of them side by side fit two cores (module fixtures stay
# in one worker). On this 2-core machine the suite grew to 24.5 minutes on three workers (the cores
# busy 77 %, idle while the long files waited) and took 20.5 on four (2026-12-05; 28 on two, earlier).
# Files go in collection order (tests/e2e first, the many short unit files last to fill the gaps):
# xdist's default reorder, by number of tests, started the longest file (two tests, nine minutes
# of Azure timing) last.
test: setup tools-test
	$(BIN)/pytest -n 4 --dist loadfile --no-loadscope-reorder

setup: $(STAMP) tools

$(STAMP): pyproject.toml emulator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./emulator -e '.[dev]'
	touch $(STAMP)

# Packer comes from Debian (1.6.6): see images/README.md for what that version can do.
tools: azurite
	@command -v packer >/dev/null 2>&1 || $(MAKE) --no-print-directory apt-install PKGS=packer

# Node.js and npm from apt when missing; Azurite from the npm registry, pinned.
azurite:
	@test -x $(AZURITE) && $(AZURITE) --version 2>/dev/null | grep -qx '$(AZURITE_VERSION)' || { \
	  { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } \
	    || $(MAKE) --no-print-directory apt-install PKGS="nodejs npm"; \
	  echo "installing azurite $(AZURITE_VERSION) from npm into $(AZURITE_DIR) ..."; \
	  mkdir -p $(AZURITE_DIR) && npm install --prefix $(AZURITE_DIR) --no-audit --no-fund --silent \
	    azurite@$(AZURITE_VERSION); }

tools-test: tools
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
	  || $(MAKE) --no-print-directory apt-install PKGS="chromium chromium-driver"
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || $(MAKE) --no-print-directory apt-install PKGS=postgresql

apt-install:
	@if [ "$$(id -u)" != "0" ]; then \
	  echo "switchyard needs: $(PKGS). Install them with: sudo apt-get install -y $(PKGS)" >&2; exit 1; \
	fi
	@echo "installing $(PKGS) from apt ..."
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(PKGS) >/dev/null

# Every package: the library, the Prefect layer, the emulator, the benchmarks and the tests. The
# tests' folders have no __init__.py (pytest imports their helpers by file name), so mypy names
# them by path from the repository root.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy switchyard flows tasks blocks emulator/switchyard_emulator bench
	$(BIN)/mypy --explicit-package-bases tests

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup tools-test
	$(BIN)/python bench/gateway_throughput.py
	$(BIN)/python bench/image_pipeline.py
	$(BIN)/python bench/emulator_arm_latency.py
	$(BIN)/python bench/instance_sampling.py
	$(BIN)/python bench/prefect_step_cost.py
	$(BIN)/python bench/fleet_patch.py
	$(BIN)/python bench/azure_profile_release.py
	$(BIN)/python bench/reliability.py

clean:
	rm -rf $(VENV) .state .tools .pytest_cache .ruff_cache .mypy_cache
