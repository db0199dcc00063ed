"""Test-session defaults: notebooks run on the `smoke` preset and write runs to a temp folder.

nbmake starts each notebook's kernel as a subprocess, which inherits these variables.
"""
import os
import tempfile


def pytest_configure(config):
    os.environ.setdefault("GRPO_PRESET", "smoke")
    os.environ.setdefault("GRPO_RUNS_DIR", tempfile.mkdtemp(prefix="grpo-test-runs-"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
