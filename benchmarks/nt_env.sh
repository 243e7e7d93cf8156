#!/usr/bin/env bash
# Build the neural-tangents 0.6.5 baseline environment in benchmarks/.nt-env (git-ignored).
#
# neural-tangents only imports on old JAX, so it gets its own virtualenv:
#   jax/jaxlib 0.4.25, numpy<2, scipy<1.13, ml_dtypes<0.5, frozendict>=2.3.8,
#   then neural-tangents 0.6.5 *without* its declared deps (tensorflow / tf2jax are only
#   for its experimental TF bridge, which benchmarks/_nt_worker.py stubs out).
#
# Usage:  benchmarks/nt_env.sh            (idempotent; PYTHON=python3.11 to pick the interpreter)
#         make bench-env
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_dir="$here/.nt-env"
python="${PYTHON:-python3}"
stamp="$env_dir/.stamp-nt-0.6.5"

if [[ -f "$stamp" ]]; then
  echo "neural-tangents env already built: $env_dir"
  exit 0
fi

"$python" -m venv "$env_dir"
pip="$env_dir/bin/python -m pip"
$pip install --quiet --upgrade pip
$pip install --quiet 'jax==0.4.25' 'jaxlib==0.4.25' 'numpy<2' 'scipy<1.13' \
  'ml_dtypes<0.5' 'frozendict>=2.3.8'
$pip install --quiet --no-deps 'neural-tangents==0.6.5'

# Smoke test: import NT through the worker's stub and compute one tiny kernel.
"$env_dir/bin/python" "$here/_nt_worker.py" --selftest
touch "$stamp"
echo "neural-tangents env ready: $env_dir"
