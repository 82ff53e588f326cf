#!/usr/bin/env bash
# The README's second command: set up (once) and run the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check .
python -m pytest -q "$@"
