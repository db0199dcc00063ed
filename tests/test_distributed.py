"""Two processes on the CPU (accelerate launch, gloo backend) run the smoke preset like one process would."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The mechanics of two processes (one metrics row per step, tokens gathered, evaluation on the main process only)
# need one evaluation question and short answers, not smoke's four.
COMMON = ["-m", "helpers.run", "--stage", "rule", "--preset", "smoke", "--set", "max_steps=2",
          "--set", "sft_steps=0", "--set", "save_steps=10", "--set", "eval_size=1", "--set", "eval_max_new_tokens=8"]


def _run(cmd, tmp_path):
    env = {**os.environ, "GRPO_RUNS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t = time.time()
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return time.time() - t, out.stdout


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    # Same global batch: 1 process x 2 completions == 2 processes x 1 completion (num_generations = 2).
    # accelerate's `--cpu` flag alone keeps one process (its multi-CPU path needs MPI); `--multi_gpu` goes through
    # torchrun, and with no CUDA device accelerate runs the processes as MULTI_CPU with the gloo backend.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    t2, out2 = _run(launcher + COMMON + ["--run-name", "two", "--set", "per_device_batch=1"], tmp_path)
    t1, out1 = _run([sys.executable] + COMMON + ["--run-name", "one", "--set", "per_device_batch=2"], tmp_path)
    two, one = tmp_path / "two", tmp_path / "one"
    steps2 = list(pd.read_csv(two / "metrics.csv")["step"])
    steps1 = list(pd.read_csv(one / "metrics.csv")["step"])
    print(f"\n2 processes: {t2:.0f} s, metrics steps {steps2}; 1 process: {t1:.0f} s, metrics steps {steps1}")
    assert steps2 == steps1 == [1, 2], "one metrics row per optimizer step, no duplicates"
    s2 = json.loads((two / "train_summary.json").read_text())
    s1 = json.loads((one / "train_summary.json").read_text())
    assert s2["steps"] == s1["steps"] == 2
    assert (two / "final_lora" / "adapter_model.safetensors").exists()
    assert len(pd.read_csv(two / "eval_table.csv")) == 2  # evaluated once (before, after), by the main process
    tokens2 = pd.read_csv(two / "metrics.csv")["num_tokens"].iloc[-1]
    tokens1 = pd.read_csv(one / "metrics.csv")["num_tokens"].iloc[-1]
    print(f"tokens seen: 2 processes {tokens2:.0f}, 1 process {tokens1:.0f}")
    # num_tokens is gathered over processes: both runs saw the same prompts (2 steps x 2 copies), and only the
    # sampled completions (at most max_completion_length=16 tokens each) may differ in length. A count of the
    # main process alone would be about half of the one-process count and fail here.
    assert tokens1 > 0 and tokens2 > 0
    assert abs(tokens2 - tokens1) <= 2 * 2 * 16, (tokens1, tokens2)
