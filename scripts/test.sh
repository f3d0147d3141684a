#!/usr/bin/env bash
# The project's one test command: set up .venv (Python 3.12, editable install with the
# test, lint and docs extras), then lint, type-check, build the docs warning-free and run
# pytest. Usage: bash scripts/test.sh [extra pytest arguments]
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

echo "==> ruff"
ruff check torchgeo_scalemae tests benchmarks docs
ruff format --check torchgeo_scalemae tests benchmarks docs
echo "==> mypy (strict)"
mypy
echo "==> sphinx (warnings are errors)"
python -m sphinx -q -W --keep-going -b html docs docs/_build/html
echo "==> pytest"
status=0
python -m pytest -n 2 --dist loadgroup "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
