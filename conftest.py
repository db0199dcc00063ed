"""Test-session defaults: notebooks run on the `smoke` preset and write runs to a temp folder, and precision "auto"
stays fp32 on every CPU (HELPERS_CPU_BF16=0: results and tolerances do not depend on whether the test machine has
bf16 matrix units; the CPU bf16 path is tested with the flags simulated, tests/test_gpu_path.py, and with an
explicit precision="bf16", tests/test_cpu_precision.py).

nbmake starts each notebook's kernel as a subprocess, which inherits these variables.
"""
import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("GRPO_PRESET", "smoke")
    os.environ.setdefault("GRPO_RUNS_DIR", tempfile.mkdtemp(prefix="grpo-test-runs-"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HELPERS_CPU_BF16", "0")
