"""Notebook 05, likelihood beyond the reward: its four experiments as resumable functions. This package holds
everything only notebook 05 uses: this driver, `sft_select` (likelihood-selected SFT data) and `steps` (injected
errors, per-step scores); `helpers.sft_select` and `helpers.steps` stay importable as the same modules.

    exp = BeyondExperiment(beyond_config("cpu"), backend="hf")   # one PeftModel, the run directory <RUN_NAME>/
    exp.sft_vs_grpo()   # part 1: SFT on reference solutions vs GRPO (rule, logprob) at equal question exposures
    exp.llh_select()    # part 2: SFT on the highest / lowest / random-likelihood subsets, typed dynamics (SLM JSON)
    exp.rerank()        # part 3: N samples per probe question: pass@k, maj@k, rerank@1 by three scores
    exp.first_error()   # part 4: find the first wrong step of a solution with one injected error

Every SFT model here is an adapter on the one base model (`training.cold_start_sft(..., merge=False)`): the *start*
is the cold start (the same configuration and seed as notebooks 01/02's cold start), saved in start/sft_lora/; each
SFT run loads the start's adapter and trains it further, into its own sft_lora/. "Adapter disabled" is therefore
the pre-SFT base model, which the implicit reward log pi_SFT(y|x) - log pi_base(y|x) needs (`rerank.reference_scope`).
GRPO runs are notebooks 01/02's own run directories (`pipeline.baseline_results`, with their held-out probe).

Run directory (each part caches its outputs and skips finished work on a re-run; every sub-run has its own
config.json, compared by `training.check_run_config` before anything saved there is reused):
    config.json, probe_start.csv              the 05 configuration; the probe of the start
    start/sft_lora/                           the cold start (adapter)
    sft_vs_grpo/sft/                          the SFT arm: sft_lora/, sft_metrics.csv, info.json, probe_end.csv
    sft_vs_grpo/changes.csv, summary.json     paired probe changes per arm (vs its start) and between arms
    llh_select/pool_scored.csv, subsets.json, own_samples.csv, typed_pool.json
    llh_select/<subset>/                      sft_lora/, dynamics.csv, slm_dynamics.json, probe_end.csv, info.json
    llh_select/changes.csv, summary.json
    rerank/samples.csv, pass_curve.csv, rerank.csv, summary.json
    first_error/error_set.json, scores.json, predictions.csv, accuracy.csv, summary.json
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from .. import config as config_mod
from .. import evaluation, pipeline, plots, probe, rerank, runtime, selfcheck, training
from ..config import ConfigError, RunConfig
from . import sft_select, steps  # notebook 05's own modules, in this package

RUN_NAME = "05_beyond"
RULE_RUN, LOGPROB_RUN = "01_rule_based", "02_logprob"
# Per-preset values of notebook 05's knobs (RunConfig fields, validated by config.validate). They live here, as the
# writing task's WRITING_OVERRIDES do, so notebooks 01-04 keep the RunConfig defaults.
# Time: smoke is sized for CI (nbmake; target <= 2 min on an idle 2-core CPU). cpu: on the arith task of notebooks
# 01/02 since 2026-12-05 (the GSM8K budget of 2026-11-30 took 33.3 min with 01/02's runs present); when 01/02's runs
# are missing part 1 trains them first (about 20 min each on 2 cores, the cpu preset's comment). t4/a100: estimates
# only (notebook header).
BEYOND_OVERRIDES = {
    # smoke: subsets of 4 = 2 SFT steps of 2, because the first step of a warmed-up schedule has learning rate 0
    "smoke": dict(llh_pool_size=8, llh_subset_size=4, llh_dynamics_n=1, llh_dynamics_every=1, rerank_samples=2,
                  rerank_questions=2, error_set_rows=2),
    # cpu: the cpu preset as notebooks 01/02 train it (the arith task, the same GRPO budget), so part 1 pairs their runs
    # under their default names; 05's own probe is the first 200 of their 400 probe problems (part 1 compares on
    # those). Part 3 samples 50 probe problems x 4 (the model solves about 20 % of them, so reranking has correct
    # samples to find); part 4's error set needs 2-3 step solutions (levels 2 and 3 of the probe).
    "cpu": dict(llh_pool_size=200, llh_subset_size=32, llh_dynamics_n=6, llh_dynamics_every=2, rerank_samples=4,
                rerank_questions=50, error_set_rows=30, probe_size=200),
    "t4": dict(llh_pool_size=1000, llh_subset_size=256, llh_dynamics_n=32, llh_dynamics_every=8, rerank_samples=8,
               rerank_questions=200, error_set_rows=150),
    "a100": dict(llh_pool_size=1000, llh_subset_size=256, llh_dynamics_n=32, llh_dynamics_every=8, rerank_samples=8,
                 rerank_questions=200, error_set_rows=150, probe_size=200),
    # gpu-hf (generation through transformers): the cpu sizes, with part 3 on half of the 100-question probe.
    # Estimate only; part 1 trains notebooks 01/02's runs first when they are missing (~45 min each, estimate).
    "gpu-hf": dict(llh_pool_size=200, llh_subset_size=32, llh_dynamics_n=8, llh_dynamics_every=4, rerank_samples=4,
                   rerank_questions=50, error_set_rows=50),
}
ARMS = ("sft", "rule", "logprob")


def beyond_config(preset_name: str, **overrides) -> RunConfig:
    """The named preset with notebook 05's knobs (BEYOND_OVERRIDES) and run name, then `overrides`; checked by
    `check_config`."""
    base = dict(BEYOND_OVERRIDES.get(preset_name, {}), run_name=RUN_NAME)
    return check_config(config_mod.preset(preset_name, **{**base, **overrides}))


def check_config(cfg: RunConfig) -> RunConfig:
    """What notebook 05 needs beyond config.validate: ConfigError when the probe is off or part 3's questions
    exceed it."""
    if cfg.probe_size < 1:
        raise ConfigError("Notebook 05 evaluates every model on the held-out probe: probe_size must be at least 1.")
    if cfg.rerank_questions > cfg.probe_size:
        raise ConfigError(f"rerank_questions={cfg.rerank_questions} exceeds probe_size={cfg.probe_size}: part 3 samples "
                          "the probe's questions. Lower rerank_questions or raise probe_size.")
    return cfg


def grpo_config(cfg: RunConfig, stage: str, run_name: str) -> RunConfig:
    """The configuration of notebook 01's (stage "rule") or 02's ("logprob") run in the same preset: notebook 05's
    knobs back at their RunConfig defaults (those runs never set them), the stage's reward weights."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.name in config_mod.BEYOND_FIELDS}
    weights = dict.fromkeys(config_mod.RULE_REWARDS, 1.0) if stage == "rule" else pipeline.logprob_weights("mean")
    return cfg.override(run_name=run_name, reward_weights=weights, probe_size=config_mod.preset(cfg.preset).probe_size,
                        **defaults)


def question_exposures(cfg: RunConfig, num_processes: int = 1) -> int:
    """GRPO's budget in questions seen: optimizer steps x prompts per step (each with num_generations samples)."""
    return cfg.max_steps * cfg.prompts_per_step * num_processes


def pool_rows(all_train: Sequence[dict], grpo_rows: Sequence[dict], size: int) -> list[dict]:
    """Part 2's pool: the last `size` training problems. ConfigError when they reach into the GRPO rows (the first
    len(grpo_rows) of the split) or the split is too small: on t4/a100 GRPO trains on every question
    (train_size=None), so part 2 needs train_size set (for notebooks 01, 02 and 05 alike) to leave a pool."""
    if size > len(all_train) - len(grpo_rows):
        raise ConfigError(f"llh_pool_size={size} reaches into the {len(grpo_rows)} GRPO training rows of a split of "
                          f"{len(all_train)}: lower llh_pool_size, or set train_size so that GRPO leaves at least "
                          f"{size} training problems unused (on t4/a100 GRPO uses all of them by default).")
    return list(all_train[len(all_train) - size:])


def common_prefix(a, b):
    """Two probe DataFrames cut to the questions they share: the probe's rows are GSM8K test rows 1000.. in order,
    so runs probed with different probe_size share their first min(len) questions."""
    n = min(len(a), len(b))
    return a.iloc[:n].reset_index(drop=True), b.iloc[:n].reset_index(drop=True)


def agreement(a, b, column: str = "completion") -> float | None:
    """Share of the shared probe questions where two probes' greedy completions are identical (None without it)."""
    if column not in a or column not in b:
        return None
    a, b = common_prefix(a, b)
    return float((a[column] == b[column]).mean()) if len(a) else None


def paired_table(ends: dict, starts: dict, pairs: Sequence[tuple[str, str]] = ()):
    """One probe-changes table: each arm's end minus its own start (`probe.changes`, column "comparison" =
    "<arm> vs start"), then each (a, b) in `pairs`: a's end minus b's end, question by question (on the questions
    both probes share, `common_prefix`)."""
    import pandas as pd

    parts = []
    comparisons = [(f"{arm} vs start", end, starts[arm]) for arm, end in ends.items()]
    comparisons += [(f"{a} vs {b}", ends[a], ends[b]) for a, b in pairs]
    for name, after, before in comparisons:
        after, before = common_prefix(after, before)
        parts.append(probe.changes(after, before, names=("before", "after")).assign(comparison=name))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return table[["comparison", *[c for c in table.columns if c != "comparison"]]] if len(table) else table


def slm_records(dynamics_csv: str | Path) -> tuple[list[int], list[dict]]:
    """(steps, per-step {type: {loglik, ppl, entropy, tokens}}) from a DynamicsCallback CSV."""
    import pandas as pd

    from ..dynamics import unflatten

    df = pd.read_csv(dynamics_csv).sort_values("step")
    rows = df.drop(columns=["seconds"], errors="ignore").to_dict("records")
    return [int(r.pop("step")) for r in rows], [unflatten(r) for r in rows]


def localisation_table(examples: Sequence[dict], scores: Sequence[dict]):
    """Per score name and variant ("all", "propagate", "no_propagate"): accuracy of the argmin step, with the
    random-step and last-step baselines, the examples scored, and accuracy minus random with a paired bootstrap
    95 % interval (probe.paired_bootstrap over examples). Unscorable examples count as wrong."""
    import pandas as pd

    rows = []
    for variant in ("all", "propagate", "no_propagate"):
        idx = [i for i, e in enumerate(examples) if variant == "all" or e["variant"] == variant]
        if not idx:
            continue
        truths = [examples[i]["first_wrong"] for i in idx]
        sizes = [examples[i]["num_steps"] for i in idx]
        for name in steps.SCORE_NAMES:
            preds = [steps.predict_first_wrong(scores[i][name]) for i in idx]
            hits = [float(p == t) for p, t in zip(preds, truths)]
            delta, lo, hi = probe.paired_bootstrap(hits, [1 / k for k in sizes])
            rows.append({"score": name, "variant": variant, "examples": len(idx),
                         "scored": sum(scores[i][name] is not None for i in idx),
                         "accuracy": steps.localisation_accuracy(preds, truths),
                         "random_step": steps.random_step_baseline(sizes),
                         "last_step": steps.last_step_baseline(truths, sizes),
                         "minus_random": delta, "ci95_lo": lo, "ci95_hi": hi, "verdict": probe.verdict(lo, hi)})
    return pd.DataFrame(rows)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def load_step_scores(path: str | Path) -> list[dict]:
    """Part 4's saved per-step scores: JSON writes a NaN step score as null; it is read back as NaN (a step
    `steps.predict_first_wrong` ignores), while a whole score that could not be computed stays None."""
    return [{name: None if v is None else [float("nan") if x is None else float(x) for x in v]
             for name, v in row.items()} for row in read_json(path)]


class BeyondExperiment(pipeline.Experiment):
    """Notebook 05 on one model: the parts below load adapters into it and cache everything in the run directory."""

    def __init__(self, cfg: RunConfig, *, backend: str | None = None, rule_run: str = RULE_RUN,
                 logprob_run: str = LOGPROB_RUN, **kw):
        check_config(cfg)
        super().__init__(cfg, backend=backend, **kw)
        self.grpo_runs = {"rule": rule_run, "logprob": logprob_run}
        self.current_adapter: Path | None = None
        from peft import get_peft_model_state_dict

        self.fresh_lora = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    # ---------------------------------------------------------------------------------
    # Plumbing: sub-runs, adapters, probes
    def part_dir(self, name: str) -> Path:
        path = self.run_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def use_adapter(self, adapter_dir: str | Path | None) -> None:
        """Load a saved adapter into the model (None: the freshly initialised LoRA, B = 0, i.e. the base model)."""
        if adapter_dir is None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, self.fresh_lora)
        else:
            training.load_adapter_weights(self.model, adapter_dir)
        self.current_adapter = Path(adapter_dir) if adapter_dir else None
        if self.current_adapter is not None:
            self.check_adapter(self.current_adapter)  # once per adapter: the generator sees the one just loaded

    def check_reference(self) -> dict:
        """Self-check, once per adapter, before an implicit reward is computed: the scorer with the adapter off
        differs from the scorer with it on (`selfcheck.check_reference`)."""
        return self._check_once(f"reference:{self.current_adapter}",
                                f"implicit-reward reference for {Path(str(self.current_adapter)).name}",
                                lambda: selfcheck.check_reference(self.model, self.tokenizer))

    @property
    def adapter_dir(self) -> Path | None:  # what vLLM must generate with on Unsloth
        return self.current_adapter

    def start(self) -> Path | None:
        """The start every run here shares, loaded into the model, its probe cached as probe_start.csv: the cold
        start (cfg.sft_steps on the rows GRPO does not use, as in notebooks 01/02), trained once into
        start/sft_lora/; the base model (None) when the preset has no cold start (t4/a100, as 01/02 there)."""
        if self.cfg.sft_steps < 1:
            self.use_adapter(None)
            self.probe_of("start", self.run_dir / "probe_start.csv")
            return None
        start_dir = self.part_dir("start")
        lora = start_dir / "sft_lora"
        if not (lora / "adapter_model.safetensors").exists():
            self.use_adapter(None)
            self.model, info = training.cold_start_sft(self.cfg, self.model, self.tokenizer, self.sft_rows(),
                                                       start_dir, backend=self.backend, merge=False)
            runtime.atomic_write_json(start_dir / "info.json", info)
        self.use_adapter(lora)
        self.probe_of("start", self.run_dir / "probe_start.csv")
        return lora

    def probe_of(self, label: str, path: Path):
        """The probe of the model as it is now (the adapter in use), cached at `path`."""
        lora = self.current_adapter if self.backend == "unsloth" else None
        return probe.cached(path, lambda: probe.run(self.model, self.tokenizer, self.probe_rows(), self.cfg,
                                                    backend=self.backend, lora_path=lora, label=f"probe {label}"))

    def sft_run(self, name: str, rows: Sequence[dict], steps_: int, batch: int, *, callbacks=()) -> tuple[Path, dict]:
        """SFT from the start on `rows` (steps_ x batch examples) in <run>/<name>: config checked, skipped when its
        sft_lora exists, then loaded into the model and probed (probe_end.csv). Returns (run dir, info)."""
        start = self.start()
        sub_cfg = self.cfg.override(run_name=f"{self.cfg.run_name}/{name}", sft_steps=steps_, sft_batch=batch)
        run_dir = self.part_dir(name)
        training.check_run_config(run_dir, sub_cfg)
        lora = run_dir / "sft_lora"
        if not (lora / "adapter_model.safetensors").exists():
            self.use_adapter(start)
            t0 = time.time()
            self.model, info = training.cold_start_sft(sub_cfg, self.model, self.tokenizer, rows, run_dir,
                                                       backend=self.backend, merge=False, extra_callbacks=callbacks)
            info |= {"wall_seconds": round(time.time() - t0, 1), "question_exposures": steps_ * batch}
            runtime.atomic_write_json(run_dir / "info.json", info)
        self.use_adapter(lora)
        self.probe_of(name, run_dir / "probe_end.csv")
        return run_dir, read_json(run_dir / "info.json")

    def sft_model(self) -> Path:
        """Part 1's SFT model (trained when missing), loaded into the model; returns its adapter directory."""
        exposures = question_exposures(self.cfg, runtime.num_processes())
        run_dir, _ = self.sft_run("sft_vs_grpo/sft", self.grpo_sft_rows(exposures), self.cfg.max_steps,
                                  exposures // self.cfg.max_steps)
        return run_dir / "sft_lora"

    def grpo_sft_rows(self, exposures: int) -> list[dict]:
        """Reference solutions of GRPO's training questions for the SFT arm: the first `exposures` that fit the
        completion budget (TRL samples GRPO's questions at random: same number, not necessarily the same ones)."""
        return training.fitting_rows(self.cfg, self.tokenizer, self.train_rows)[:exposures]

    # ---------------------------------------------------------------------------------
    # Part 1
    def sft_vs_grpo(self) -> dict:
        """SFT on GSM8K reference solutions vs GRPO with the rule and the logprob reward, each from the same cold
        start with the same question exposures (GRPO: max_steps x prompts per step; SFT: the same number of steps
        and questions per step). All evaluated on the held-out probe; paired intervals vs the start and between the
        arms. The GRPO runs are notebooks 01/02's (run now on hf when missing). Cached in sft_vs_grpo/."""
        out = self.part_dir("sft_vs_grpo")
        if (out / "summary.json").exists() and (out / "changes.csv").exists():
            return self.load_part(out)
        sft_dir = self.sft_model().parent
        ends = {"sft": probe.load(sft_dir, "end")}
        starts = {"sft": probe.load(self.run_dir, "start")}
        info = {"sft": read_json(sft_dir / "info.json")}
        exposures = question_exposures(self.cfg, runtime.num_processes())
        for arm, stage in (("rule", "rule"), ("logprob", "logprob")):
            name = self.grpo_runs[arm]
            found = pipeline.baseline_results(grpo_config(self.cfg, stage, name), name, self.backend, stage=stage,
                                              probes=True)
            ends[arm], starts[arm] = probe.load(found["run_dir"], "end"), probe.load(found["run_dir"], "start")
            summary = read_json(found["run_dir"] / "train_summary.json")
            info[arm] = {"run_dir": str(found["run_dir"]), "steps": summary.get("steps"),
                         "wall_seconds": summary.get("seconds_this_session"),
                         "question_exposures": question_exposures(grpo_config(self.cfg, stage, name))}
        table = paired_table(ends, starts, pairs=[("sft", "rule"), ("sft", "logprob"), ("logprob", "rule")])
        same_start = {arm: agreement(starts[arm], starts["sft"]) for arm in ("rule", "logprob")}
        summary = {"budget_question_exposures": exposures, "arms": info, "start_greedy_agreement": same_start,
                   "probe_questions": len(ends["sft"]), "means": {arm: probe.summary(df) for arm, df in ends.items()}}
        runtime.atomic_write_csv(out / "changes.csv", table)
        runtime.atomic_write_json(out / "summary.json", summary)
        return self.load_part(out)

    # ---------------------------------------------------------------------------------
    # Part 2
    def llh_select(self) -> dict:
        """Score a pool of training solutions by the base model's mean token log-likelihood, train three SFT runs
        from the start on equal-size high / low / random subsets, probe each, and record the typed dynamics pool
        at step 0, every llh_dynamics_every steps and the last step (slm_dynamics.json per run). Cached."""
        out = self.part_dir("llh_select")
        if (out / "summary.json").exists() and (out / "changes.csv").exists():
            return self.load_part(out)
        from .. import tasks
        from ..dynamics import DynamicsCallback

        scored_csv = out / "pool_scored.csv"
        if scored_csv.exists():
            import pandas as pd

            scored = pd.read_csv(scored_csv, keep_default_na=False).to_dict("records")
        else:
            all_train = tasks.train_rows(self.cfg.task, None, self.cfg.dataset_source)
            rows = training.fitting_rows(self.cfg, self.tokenizer,
                                         pool_rows(all_train, self.train_rows, self.cfg.llh_pool_size))
            if len(rows) < 2 * self.cfg.llh_subset_size:  # before any scoring: high and low must not overlap
                raise ConfigError(
                    f"Only {len(rows)} of the llh_pool_size={self.cfg.llh_pool_size} pool solutions fit in 3/4 of "
                    f"max_completion_length={self.cfg.max_completion_length} tokens; the high and low subsets need "
                    f"2 x llh_subset_size={2 * self.cfg.llh_subset_size}. Raise llh_pool_size or lower "
                    "llh_subset_size.")
            self.use_adapter(None)  # the base model
            scored = sft_select.score_pool(self.model, self.tokenizer, rows, self.cfg.tag_style,
                                           batch_size=self.cfg.eval_batch_size)
            import pandas as pd

            runtime.atomic_write_csv(scored_csv, pd.DataFrame(scored))
        subsets = sft_select.select_subsets(scored, self.cfg.llh_subset_size, seed=self.cfg.seed)
        runtime.atomic_write_json(out / "subsets.json", {k: [r["question"] for r in v] for k, v in subsets.items()})
        pool = self.typed_pool(out, subsets)
        batch = self.cfg.sft_batch
        ends, starts, info, slm = {}, {}, {}, {}
        for arm, rows in subsets.items():
            arm_dir = out / arm
            cb = DynamicsCallback(arm_dir / "dynamics.csv", self.tokenizer, pool, every=self.cfg.llh_dynamics_every,
                                  names=("loglik", "ppl", "entropy", "tokens"))
            run_dir, info[arm] = self.sft_run(f"llh_select/{arm}", rows, len(rows) // batch, batch, callbacks=[cb])
            ends[arm], starts[arm] = probe.load(run_dir, "end"), probe.load(self.run_dir, "start")
            if not (run_dir / "slm_dynamics.json").exists():
                sft_select.write_slm_json(run_dir / "slm_dynamics.json", *slm_records(run_dir / "dynamics.csv"))
            slm[arm] = read_json(run_dir / "slm_dynamics.json")
        table = paired_table(ends, starts, pairs=[("high_llh_train", "low_llh_train"),
                                                  ("high_llh_train", "rand_llh_train"),
                                                  ("low_llh_train", "rand_llh_train")])
        means = {k: sum(r["llh_mean"] for r in v) / len(v) for k, v in subsets.items()}
        overlap = sft_select.subset_overlap(subsets)
        runtime.atomic_write_csv(out / "changes.csv", table)
        runtime.atomic_write_json(out / "summary.json", {"pool": len(scored), "subset_size": self.cfg.llh_subset_size,
                                                         "subset_mean_llh": means, "subset_overlap": overlap,
                                                         "arms": info, "dynamics": slm,
                                                         "paraphrase": sft_select.paraphrase.__doc__.split("\n")[0]})
        return self.load_part(out)

    def typed_pool(self, out: Path, subsets: dict) -> list[dict]:
        """The typed dynamics pool (cached typed_pool.json): each subset, held-out reference solutions (the probe's
        questions), the start model's own sampled answers to them, and their deterministic paraphrases."""
        path = out / "typed_pool.json"
        if path.exists():
            return read_json(path)
        n = self.cfg.llh_dynamics_n
        heldout = probe.probe_rows(self.cfg, max(n, self.cfg.probe_size))[:n]
        self.start()
        own = probe.cached(out / "own_samples.csv", lambda: evaluation.sample_groups(
            self.model, self.tokenizer, heldout, self.cfg, n=1, backend=self.backend,
            temperature=self.cfg.temperature, lora_path=self.current_adapter if self.backend == "unsloth" else None))
        pool = sft_select.typed_pool(self.tokenizer, subsets, heldout, own, n=n, tag_style=self.cfg.tag_style)
        runtime.atomic_write_json(path, pool)
        return pool

    # ---------------------------------------------------------------------------------
    # Part 3
    def rerank(self) -> dict:
        """N samples per probe question from part 1's SFT model, pass@k and maj@k for k = 1..N, rerank@1 by each of
        rerank.SCORES (the implicit reward: the SFT adapter on vs off), and each one's gain over sampled pass@1
        with a paired bootstrap interval. Cached in rerank/ (samples, then one score column at a time)."""
        import pandas as pd

        out = self.part_dir("rerank")
        if (out / "summary.json").exists():
            return self.load_part(out)
        self.use_adapter(self.sft_model())
        rows = self.probe_rows()[: self.cfg.rerank_questions]
        path = out / "samples.csv"
        samples = probe.cached(path, lambda: evaluation.sample_groups(
            self.model, self.tokenizer, rows, self.cfg, n=self.cfg.rerank_samples, backend=self.backend,
            temperature=self.cfg.temperature, lora_path=self.current_adapter if self.backend == "unsloth" else None))
        for name, score in rerank.SCORES.items():
            if name not in samples:
                self.check_reference()  # only when something is scored (the implicit reward uses the adapter off)
                samples[name] = score(self.model, self.tokenizer, samples, self.cfg.tag_style,
                                      batch_size=self.cfg.eval_batch_size)
                runtime.atomic_write_csv(path, samples)
        curve = rerank.pass_curve(samples)
        gains = pd.DataFrame([{"score": name, **rerank.rerank_gain(samples, name)} for name in rerank.SCORES])
        runtime.atomic_write_csv(out / "pass_curve.csv", curve)
        runtime.atomic_write_csv(out / "rerank.csv", gains)
        runtime.atomic_write_json(out / "summary.json", {
            "questions": int(samples["q"].nunique()), "samples_per_question": self.cfg.rerank_samples,
            "sampled_from": "part 1's SFT model", "temperature": self.cfg.temperature,
            "implicit_reward": "log pi_SFT(y|x) - log pi_base(y|x) summed over the completion (adapter on - off)"})
        return self.load_part(out)

    # ---------------------------------------------------------------------------------
    # Part 4
    def first_error(self) -> dict:
        """A labelled set (held-out reference solutions with one injected error, both variants), per-step scores
        under part 1's SFT model (implicit reward vs the base, log-prob drop, trace probe), localisation accuracy
        against the random-step and last-step baselines. Cached in first_error/."""
        import pandas as pd

        out = self.part_dir("first_error")
        if (out / "summary.json").exists():
            return self.load_part(out)
        if (out / "error_set.json").exists():
            examples = read_json(out / "error_set.json")
        else:
            rows = probe.probe_rows(self.cfg, 319)
            examples = steps.build_error_set(rows, self.cfg.error_set_rows, seed=self.cfg.seed)
            runtime.atomic_write_json(out / "error_set.json", examples)
        if not (out / "scores.json").exists():
            self.use_adapter(self.sft_model())
            self.check_reference()
            runtime.atomic_write_json(out / "scores.json", steps.per_step_scores(
                self.model, self.tokenizer, examples, tag_style=self.cfg.tag_style, batch_size=self.cfg.eval_batch_size))
        scores = load_step_scores(out / "scores.json")
        preds = pd.DataFrame([{"id": e["id"], "variant": e["variant"], "num_steps": e["num_steps"],
                               "first_wrong": e["first_wrong"],
                               **{f"pred_{n}": steps.predict_first_wrong(s[n]) for n in steps.SCORE_NAMES}}
                              for e, s in zip(examples, scores)])
        runtime.atomic_write_csv(out / "predictions.csv", preds)
        runtime.atomic_write_csv(out / "accuracy.csv", localisation_table(examples, scores))
        runtime.atomic_write_json(out / "summary.json", {"examples": len(examples),
                                                         "scored_with": "part 1's SFT model; implicit: vs the base"})
        return self.load_part(out)

    def error_examples(self, k: int = 3, score: str = "implicit", *, as_html: bool = False) -> list[str]:
        """The first `k` part-4 examples rendered with the true and the `score`-predicted first wrong step."""
        out = self.run_dir / "first_error"
        examples, scores = read_json(out / "error_set.json"), load_step_scores(out / "scores.json")
        shown = []
        for e, s in list(zip(examples, scores))[:k]:
            body = steps.render_steps(e["steps"], steps.predict_first_wrong(s[score]), e["first_wrong"],
                                      as_html=as_html)
            shown.append(body if as_html else f"[{e['variant']}, changed {e['old']} -> {e['new']}] {e['question']}\n"
                         + body)
        return shown

    # ---------------------------------------------------------------------------------
    @staticmethod
    def load_part(out: Path) -> dict:
        """A part's saved results: summary.json plus each CSV as a DataFrame (by file stem)."""
        import pandas as pd

        res = read_json(out / "summary.json")
        for csv in sorted(out.glob("*.csv")):
            if csv.stem not in ("samples", "own_samples", "pool_scored"):
                res[csv.stem] = pd.read_csv(csv, keep_default_na=False)
        return res

    # ---------------------------------------------------------------------------------
    # Figures (saved in the run directory, and in figures/ when figures_dir is set)
    @property
    def label(self) -> str:
        return plots.run_label(self.cfg.model_name, f"cold start {self.cfg.sft_steps} + budget {self.cfg.max_steps}",
                               precision=self.cfg.precision, task=self.cfg.task)

    def plot_arms(self, table, name: str, title: str, metrics=("strict_accuracy", "format_rate",
                                                               "gold_answer_logprob")):
        """Paired probe differences with 95 % intervals, one panel per metric, one bar per comparison."""
        plt = plots.pyplot()
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
        for ax, metric in zip(axes.flat, metrics):
            t = table[table["metric"] == metric]
            ys = range(len(t))
            ax.errorbar(t["delta"].astype(float), list(ys), xerr=[t["delta"].astype(float) - t["ci95_lo"].astype(float),
                        t["ci95_hi"].astype(float) - t["delta"].astype(float)], fmt="o", capsize=3)
            ax.axvline(0, color="#888", lw=1)
            ax.set_yticks(list(ys), list(t["comparison"]), fontsize=8)
            ax.set_title(metric.replace("_", " ") + " (difference, 95 % CI)", fontsize=9)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{self.label} · {title}", fontsize=9)
        fig.tight_layout()
        plots.save_figure(fig, self.figure_paths(name))
        return fig

    def plot_dynamics(self, slm: dict, name: str = "05_llh_dynamics.png"):
        """Part 2: per SFT run (column), mean log-likelihood and perplexity of each sample type against step."""
        plt = plots.pyplot()
        fig, axes = plt.subplots(2, len(slm), figsize=(4.4 * len(slm), 6), squeeze=False, sharey="row")
        for col, (arm, js) in enumerate(slm.items()):
            for kind, vals in js["results_by_type"].items():
                for row, field in enumerate(("avg_log_likelihood", "avg_perplexity")):
                    axes[row, col].plot(js["steps"], vals[field], marker="o", ms=3, label=kind)
            axes[0, col].set_title(f"SFT on {arm}", fontsize=9)
            axes[1, col].set_xlabel("SFT step")
        axes[0, 0].set_ylabel("mean log-likelihood (sum, nats)")
        axes[1, 0].set_ylabel("token perplexity")
        axes[0, -1].legend(fontsize=7)
        for ax in axes.flat:
            ax.grid(alpha=0.3)
        fig.suptitle(f"{self.label} · typed dynamics", fontsize=9)
        fig.tight_layout()
        plots.save_figure(fig, self.figure_paths(name))
        return fig

    def plot_rerank(self, curve, gains, name: str = "05_rerank.png"):
        """Part 3: pass@k and maj@k against k; rerank@1 by each score with its 95 % interval and sampled pass@1."""
        plt = plots.pyplot()
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
        a.plot(curve["k"], curve["pass_at_k"], marker="o", label="pass@k (unbiased)")
        a.plot(curve["k"], curve["maj_at_k"], marker="s", label="maj@k (first k)")
        a.set_xlabel("k")
        a.set_ylabel("share of questions")
        a.legend(fontsize=8)
        r = gains["rerank_at_1"].astype(float)
        b.errorbar(list(gains["score"]), r, yerr=[r - (gains["pass_at_1"].astype(float) + gains["ci_low"].astype(float)),
                   gains["pass_at_1"].astype(float) + gains["ci_high"].astype(float) - r], fmt="o", capsize=3)
        b.axhline(float(gains["pass_at_1"].iloc[0]), color="#888", ls="--", label="sampled pass@1")
        b.set_ylabel("rerank@1 (95 % CI of the gain)")
        b.tick_params(axis="x", labelsize=8)
        b.legend(fontsize=8)
        for ax in (a, b):
            ax.grid(alpha=0.3)
        fig.suptitle(f"{self.label} · reranking {int(curve['questions'].iloc[0])} probe questions", fontsize=9)
        fig.tight_layout()
        plots.save_figure(fig, self.figure_paths(name))
        return fig


def run_part(cfg: RunConfig, part: str, **kw) -> tuple[BeyondExperiment, dict]:
    """One part end to end (the CLI stages): (experiment, the part's results); its figure is saved."""
    exp = BeyondExperiment(cfg, **kw)
    res = getattr(exp, PARTS[part])()
    if not exp.is_main:
        return exp, res
    if part == "sft_vs_grpo":
        exp.plot_arms(res["changes"], "05_sft_vs_grpo.png", "SFT vs GRPO, held-out probe")
    elif part == "llh_select":
        exp.plot_dynamics(res["dynamics"])
        exp.plot_arms(res["changes"], "05_llh_select.png", "likelihood-selected SFT, held-out probe")
    elif part == "rerank":
        exp.plot_rerank(res["pass_curve"], res["rerank"])
    return exp, res


PARTS = {"sft_vs_grpo": "sft_vs_grpo", "llh_select": "llh_select", "rerank": "rerank", "first_error": "first_error"}
