#!/usr/bin/env bash
# The GPU path on a real GPU, offline, in a few minutes (scripts/gpu_check.py says what it runs): the hf backend on
# CUDA with a small random-weight model, the start-up self-check in fp16 and bf16, 2 GRPO steps of notebook 01's and
# 02's stages, an evaluation batch; one summary line `gpu-check: OK|FAIL ...`, exit 1 on any problem.
#   bash scripts/gpu-check.sh                 # on the GPU machine
#   bash scripts/gpu-check.sh --device cpu    # the CPU dry run (tests/test_gpu_check.py runs it)
# Packages: the machine this is for has Python 3.12, torch 2.11 (CUDA 13) and transformers 5.17, but no network, and
# trl 0.18.2 needs transformers 4.52.4. When $GPU_CHECK_WHEELS (default .gpu-check/wheels, ignored by git) holds
# wheels, requirements-colab-hf.txt is installed from them alone (--no-index) into a venv ($GPU_CHECK_VENV, default
# .gpu-check/venv) that sees the machine's packages, with the machine's torch pinned as a constraint, so torch stays
# and transformers 4.52.4 shadows 5.17. Fill the folder beforehand, where the registry is reachable:
#   .venv/bin/python scripts/gpu_check.py --fetch-wheels .gpu-check/wheels   (prints what it fetched and the size)
# Without wheels it runs with $PYTHON (default python3) as it is.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.gpu-check/wheels}
VENV=${GPU_CHECK_VENV:-.gpu-check/venv}
REQUIREMENTS=${GPU_CHECK_REQUIREMENTS:-requirements-colab-hf.txt}  # another file only in tests/test_gpu_check.py
TIMEOUT=${GPU_CHECK_TIMEOUT:-540}  # the check itself must finish in 480 s; this only stops a hang

if compgen -G "$WHEELS/*.whl" > /dev/null; then
  start=$(date +%s)
  if [ ! -x "$VENV/bin/python" ]; then
    # No pip of its own (it would bring an old setuptools that shadows the machine's): the machine's pip runs in it.
    "$PY" -m venv --system-site-packages --without-pip "$VENV" || exit 1
    # --system-site-packages sees the base interpreter's packages only: when $PY is itself a venv's, a .pth file adds
    # its site-packages too (after the new venv's own, so the pins installed here shadow the machine's versions).
    "$PY" -c 'import site; print("\n".join(site.getsitepackages()))' \
      > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/gpu_check_base.pth"
  fi
  torch_version=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))') || {
    echo "gpu-check: FAIL no torch in $PY: this check uses the machine's torch"; exit 1; }
  echo "torch==$torch_version" > "$VENV/keep-torch.txt"
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-index --find-links "$WHEELS" \
      -c "$VENV/keep-torch.txt" -r "$REQUIREMENTS"; then
    echo "gpu-check: FAIL pip could not install $REQUIREMENTS from $WHEELS alone (a wheel missing? see" \
         "pip's message above; scripts/gpu_check.py --fetch-wheels, with --target-freeze for this machine)"
    exit 1
  fi
  echo "gpu-check: installed $REQUIREMENTS from $WHEELS into $VENV in $(( $(date +%s) - start )) s" \
       "(torch $torch_version kept)"
  PY="$VENV/bin/python"
fi
exec timeout "$TIMEOUT" "$PY" scripts/gpu_check.py "$@"
