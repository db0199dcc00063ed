"""A run killed after its first checkpoint resumes from it: nothing is trained twice or lost."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
def command(stage):
    # 3 steps, a checkpoint (and, for writing, a checkpoint probe) after each, 2 evaluation rows: the kill lands after
    # checkpoint 1 and two steps are left to resume; more steps or rows would only repeat the same mechanics.
    return [sys.executable, "-m", "helpers.run", "--stage", stage, "--preset", "smoke", "--run-name", "killed",
            "--set", "max_steps=3", "--set", "save_steps=1", "--set", "sft_steps=0", "--set", "eval_size=2"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["rule", "writing"])
def test_kill_after_first_checkpoint_then_resume(tmp_path, stage):
    CMD = command(stage)  # noqa: N806
    env = {**os.environ, "GRPO_RUNS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    run = tmp_path / "killed"
    proc = subprocess.Popen(CMD, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not (run / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no clean-up code runs: like a Colab disconnect
    proc.wait()
    assert not (run / "final_lora").exists(), "killed too late: the run had already finished"
    killed_at = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*"))
    print(f"\nkilled with checkpoints {killed_at}; metrics rows: {len(pd.read_csv(run / 'metrics.csv'))}")
    for f in list(run.rglob("*.csv")) + list(run.rglob("*.json")):  # atomic writes: nothing half-written
        if f.suffix == ".json":
            json.loads(f.read_text())
        else:
            pd.read_csv(f)

    out = subprocess.run(CMD, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "resuming from" in log and "checkpoint-" in log, log[-2000:]
    steps = list(pd.read_csv(run / "metrics.csv")["step"])
    print(f"after resume: metrics steps {steps}")
    assert steps == [1, 2, 3], steps  # every step exactly once
    assert (run / "final_lora" / "adapter_model.safetensors").exists()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["resumed_from"] and summary["steps"] == 3
    assert "eval_samples_before.csv from an earlier session" in log  # the evaluation is not redone either
