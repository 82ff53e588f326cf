#!/usr/bin/env bash
# The README's second command: set up (once) and run the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check .
# two workers (pytest-xdist), one per core: most tests wait on a TensorFlow import or a tiny
# single-threaded run, so the suite takes about half the time (README); `-n 0` runs it in one process
python -m pytest -q -n 2 "$@"
