# The two commands of a fresh machine: `make run` and `make test`.
# Both install what they need: Python packages into .venv, and (as root on Debian)
# MapServer, lighttpd and GDAL for the demo WMS.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run run-website test lint system localstack mapproxy setup setup-dev viewer bundle clean

run: setup system
	-bash scripts/build-viewer.sh
	$(BIN)/python application.py

# The same, with a local S3 website endpoint (LocalStack) in front: the whole loop of
# bucket -> 307 -> service -> upload -> bucket, on this machine (see README).
run-website: setup system localstack
	-bash scripts/build-viewer.sh
	LOCAL_WEBSITE=true $(BIN)/python application.py

test: setup-dev system localstack mapproxy
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup-dev
	$(BIN)/ruff check .

system:
	bash scripts/install-system-packages.sh

# LocalStack's S3 in .venv-localstack/ (Python 3.13, pinned in requirements-localstack.txt).
localstack:
	bash scripts/install-localstack.sh

# MapProxy from PyPI in bench/.venv-mapproxy (pinned in bench/requirements-mapproxy.txt):
# the upstream tile service of tests/integration/test_sources.py and of the benchmarks.
mapproxy: setup-dev
	$(BIN)/python -c "from bench.compare_mapproxy import ensure_mapproxy_venv as e; e()"

# OpenLayers for the preview page, from the npm registry (pinned in viewer/).
viewer:
	bash scripts/build-viewer.sh

# The zip that `eb deploy` and the console upload accept.
bundle:
	bash scripts/build-bundle.sh

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(VENV)/.runtime $@

clean:
	rm -rf $(VENV) .venv-localstack var demo/build .pytest_cache .ruff_cache
