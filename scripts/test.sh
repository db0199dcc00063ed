#!/usr/bin/env bash
# Set up (if needed) and run every test: unit tests, static Colab checks, and each notebook on the
# `smoke` preset under nbmake (conftest.py sets GRPO_PRESET=smoke and a temporary runs folder).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
start=$(date +%s)
.venv/bin/python -m pytest --nbmake --nbmake-timeout=1200 --durations=15 -p no:cacheprovider tests notebooks "$@"
rc=$?
echo "test suite wall time: $(( $(date +%s) - start )) s"
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): the suite is misconfigured, failing." >&2
  exit 1
fi
exit "$rc"
