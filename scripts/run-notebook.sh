#!/usr/bin/env bash
# Run one notebook headless with papermill, the way you would watch it in a browser:
#   bash scripts/run-notebook.sh 01 -p PRESET cpu -p MAX_STEPS 60
# - the parameters are the notebook's form fields (the cell tagged `parameters`), the same knobs as on Colab;
# - every cell's output streams to this terminal as it is produced (--log-output), with plain-text progress
#   (one line per training step: loss, reward, KL, s/step; one line per evaluation batch);
# - the executed copy, with all its outputs, is written into the run directory
#   (<runs root>/<run name>/executed_<notebook>.ipynb); the committed notebook is never written.
# Any other papermill option passes through (e.g. -r NAME VALUE for a raw string, -y YAML).
# Uses ./.venv (created by scripts/setup.sh when it has no papermill yet); VENV=/path/to/venv uses another.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() {
  echo "usage: bash scripts/run-notebook.sh NN [-p NAME VALUE ...]" >&2
  echo "  NN: one of $(ls notebooks | sed -n 's/^\([0-9][0-9]\)_.*\.ipynb$/\1/p' | tr '\n' ' ')" >&2
  exit 2
}
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
NB=$(ls "notebooks/$1"_*.ipynb 2>/dev/null | head -n 1)
[ -n "$NB" ] || usage
shift
NAME=$(basename "$NB")

if [ -z "${VENV:-}" ]; then
  VENV=.venv
  [ -x .venv/bin/papermill ] || bash scripts/setup.sh || exit 1
fi
if [ ! -x "$VENV/bin/papermill" ]; then
  echo "no papermill in $VENV: run bash scripts/setup.sh (or pip install -r requirements-cpu.txt there)" >&2
  exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/run-notebook.XXXXXX")
OUT="$WORK/executed_$NAME"  # moved into the run directory at the end (its path is known once the config cell ran)
touch "$WORK/started"
start=$(date +%s)
echo "[run-notebook] $NB -> executed copy in the run directory (while running: $OUT)"
# HELPERS_HEADLESS: the helpers print progress as text lines (widget bars don't stream);
# HELPERS_RUN_DIR_NOTE: runtime.banner() writes the run directory there.
HELPERS_HEADLESS=1 HELPERS_RUN_DIR_NOTE="$WORK/run_dir" PYTHONUNBUFFERED=1 \
  "$VENV/bin/papermill" "$ROOT/$NB" "$OUT" --cwd "$ROOT/notebooks" --log-output --no-progress-bar "$@"
rc=$?

echo
echo "[run-notebook] $NB finished with exit code $rc after $(( $(date +%s) - start )) s"
RUN_DIR=$(cat "$WORK/run_dir" 2>/dev/null || true)
if [ -n "$RUN_DIR" ] && [ -d "$RUN_DIR" ]; then
  mv -f "$OUT" "$RUN_DIR/executed_$NAME"
  echo "executed notebook: $RUN_DIR/executed_$NAME"
  echo "run directory:     $RUN_DIR"
  metrics=$(find "$RUN_DIR" -maxdepth 2 -name metrics.csv | sort)
  echo "metrics.csv:       ${metrics:-(none written)}" | sed '2,$s/^/                   /'
  figs=$( { find "$ROOT/figures" -type f -newer "$WORK/started" 2>/dev/null; \
            find "$RUN_DIR" -maxdepth 2 -name '*.png' -newer "$WORK/started"; } | sort)
  echo "figures:           ${figs:-(none)}" | sed '2,$s/^/                   /'
  rm -rf "$WORK"
else
  echo "executed notebook: $OUT (the run directory was not reached)"
fi
exit "$rc"
