#!/usr/bin/env bash
# The project's check: lint, types, layer contracts, then the test suite (extra arguments go to pytest).
# Run it inside the environment scripts/test.sh builds; CI reaches it through scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff check";    python -m ruff check .
echo "== mypy";          python -m mypy
echo "== lint-imports";  lint-imports
echo "== pytest";        python -m pytest -q -p no:cacheprovider "$@"
