"""One experiment, step by step: the code path shared by the notebooks and the command line.

    exp = Experiment(cfg)                 # backend, run directory, model + LoRA, data
    before = exp.evaluate("before")       # cached in the run directory: a re-run does not regenerate
    exp.cold_start()                      # optional SFT warm-up (skipped when done or off)
    exp.train(reward_funcs)               # GRPO; resumes from the last checkpoint; skipped when finished
    after = exp.evaluate("after")
    exp.report()                          # eval table, curves and bars, saved next to the run

The held-out probe (helpers/probe.py) measures what GRPO itself changed: `exp.probe("start")` after the cold start,
`exp.train(..., extra_callbacks=exp.probe_callbacks())` at each checkpoint, `exp.probe("end")`, then
`exp.probe_changes()` (after GRPO minus after cold start, paired bootstrap intervals) and `exp.probe_history()`.

A notebook calls these one cell at a time with the lesson in between; `run_rule_stage` calls them
in a row (used by notebook 02 when notebook 01's results are missing).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from . import config as config_mod
from . import data, evaluation, plots, probe, runtime, selfcheck, tasks, training


# What the transfer sets report (per-question columns of evaluation.evaluate's DataFrame)
TRANSFER_METRICS = {k: probe.PROBE_METRICS[k] for k in ("strict_accuracy", "lenient_accuracy", "format_rate")}


class Experiment:
    def __init__(self, cfg: config_mod.RunConfig, *, backend: str | None = None, model=None, tokenizer=None,
                 figures_dir: str | Path | None = None, overwrite: bool = False):
        """`overwrite=True` (the notebooks' OVERWRITE) deletes this run directory's earlier results first; without
        it, a run directory whose config.json differs in a result-changing field stops here with a ConfigError
        (training.check_run_config), before the model loads and before anything saved there is reused."""
        config_mod.validate(cfg, num_processes=runtime.num_processes())
        self.cfg = cfg
        self.is_main = runtime.is_main_process()  # under accelerate, only the main process evaluates and writes
        self.backend = backend or runtime.pick_backend(config_mod.backend_request(cfg))
        if self.backend == "unsloth" and cfg.model_name == config_mod.EMBEDDED_MODEL:
            raise config_mod.ConfigError("The embedded SmolLM2 GGUF model runs on the 'hf' backend only: pass "
                                         "backend='hf' (BACKEND='hf' in the notebook form).")
        self.run_dir = runtime.run_dir(cfg.project, cfg.run_name)
        training.check_run_config(self.run_dir, cfg, overwrite)  # before cached evals, sft_lora or final_lora
        self.figures_dir = Path(figures_dir) if figures_dir else None
        if model is None:
            model, tokenizer = training.load_model(cfg, self.backend)
        self.model, self.tokenizer = model, tokenizer
        self.checks = selfcheck.run(model, tokenizer, cfg, self.backend) if cfg.self_check else {}
        self.train_rows, self.test_rows = self.load_rows()
        self.evals: dict[str, tuple[dict, object]] = {}
        self.result: training.TrainResult | None = None
        self.sft: dict = {}
        self.sft_dir: Path | None = None
        self._adapters_checked: set[str] = set()
        self.probes: dict[str, object] = {}
        self.transfers: dict[str, dict] = {}

    # Task hooks: cfg.task's questions (helpers/tasks.py: GSM8K or the arith problems); helpers.writing.WritingExperiment
    # overrides them for stories.
    def load_rows(self):
        """(train rows, evaluation rows) of cfg.task."""
        cfg = self.cfg
        rows = tasks.train_rows(cfg.task, cfg.train_size, cfg.dataset_source)
        if cfg.train_levels and cfg.task == "arith":  # GRPO on the levels within reach (the cold start keeps its rows)
            rows = [r for r in rows if r.get("level") in cfg.train_levels]
        return rows, tasks.eval_rows(cfg.task, cfg.eval_size, cfg.dataset_source)

    def train_dataset(self):
        return data.grpo_dataset(self.train_rows, tag_style=self.cfg.tag_style)

    def rule_rewards(self) -> dict:
        """The rule rewards by name (TRL logs rewards/<name>/mean), format rewards in cfg.tag_style's tags."""
        from .rewards import rule_reward_funcs

        return rule_reward_funcs(self.cfg.tag_style)

    def sft_rows(self) -> list[dict]:
        """Cold-start examples: training questions *not* used by GRPO (when there are enough)."""
        all_train = tasks.train_rows(self.cfg.task, None, self.cfg.dataset_source)
        used = self.cfg.train_size if self.cfg.train_size is not None else len(self.train_rows)
        return all_train[used:] or all_train

    sft_kwargs: dict = {}
    pre_training_labels: tuple[str, ...] = ("before",)  # evaluations GRPO does not make stale  # passed to training.cold_start_sft (completion_fn, dataset_fn)

    # ---------------------------------------------------------------------------------
    def evaluate(self, label: str, rows: Sequence[dict] | None = None, *, reuse: bool = True):
        """(summary, per-question DataFrame) of greedy answers; cached as eval_samples_<label>.csv."""
        path = self.run_dir / f"eval_samples_{label}.csv"
        if not self.is_main:  # evaluation runs once, on the main process
            return {}, None
        if reuse and path.exists():
            df = self.read_samples(path)
            summary = self.summarize(df, label)
            print(f"[eval] {label}: loaded {path.name} from an earlier session")
        else:
            lora = self.adapter_dir if self.backend == "unsloth" else None
            self.check_adapter(lora)
            summary, df = self.run_eval(rows or self.test_rows, label, lora)
            runtime.atomic_write_csv(path, df)
        self.evals[label] = (summary, df)
        return summary, df

    @property
    def adapter_dir(self) -> Path | None:
        """The saved adapter that holds the current policy: final_lora after GRPO, sft_lora after the cold start,
        None while the LoRA is fresh. On Unsloth, vLLM generates with the base model unless it is given this."""
        if self.result is not None:
            return self.result.final_lora
        if self.sft_dir is not None and self.sft.get("sft") in ("trained", "loaded"):
            return self.sft_dir / "sft_lora"
        return None

    def check_adapter(self, lora_path=None) -> dict:
        """Self-check, once per adapter: the trained adapter really changes what the generator computes."""
        if self.adapter_dir is None:
            return {}
        key = str(lora_path or self.adapter_dir)
        return self._check_once(key, f"adapter {Path(key).name}", lambda: selfcheck.check_adapter(
            self.model, self.tokenizer, self.backend, lora_path))

    def _check_once(self, key: str, what: str, check: Callable[[], dict]) -> dict:
        """Run the self-check `check` once per `key` (main process, cfg.self_check on); print and return its result."""
        if not self.cfg.self_check or not self.is_main or key in self._adapters_checked:
            return {}
        out = check()
        self._adapters_checked.add(key)
        print(f"[self-check] {what}: {out}")
        return out

    # Evaluation hooks (the writing task has its own generation, metrics and CSV columns).
    def run_eval(self, rows, label: str, lora_path):
        return evaluation.evaluate(self.model, self.tokenizer, rows, self.cfg, backend=self.backend, label=label,
                                   lora_path=lora_path)

    @staticmethod
    def read_samples(path):
        import pandas as pd

        return pd.read_csv(path, keep_default_na=False)

    @staticmethod
    def summarize(df, label: str) -> dict:
        return evaluation.summarize(df, label)

    def cold_start(self, sft_dir: str | Path | None = None) -> dict:
        """SFT warm-up on tagged solutions of training questions *not* used by GRPO (when there are enough).

        `sft_dir` (default: the run directory) holds sft_lora/; the ablation grid shares one across variants.
        """
        self.sft_dir = Path(sft_dir or self.run_dir)
        self.model, self.sft = training.cold_start_sft(self.cfg, self.model, self.tokenizer, self.sft_rows(),
                                                       self.sft_dir, backend=self.backend, **self.sft_kwargs)
        return self.sft

    def train(self, reward_funcs: Sequence[Callable], *, extra_metrics=None, trainer_cls=None,
              extra_callbacks: Sequence = ()):
        if not training.is_finished(self.run_dir):  # the model is about to change: older "after" evals are stale
            for stale in self.run_dir.glob("eval_samples_*.csv"):
                if stale.stem.removeprefix("eval_samples_") not in self.pre_training_labels:
                    stale.unlink()
            for stale in (self.run_dir / "probe_end.csv", self.run_dir / "probe_changes.csv",
                          self.run_dir / "transfer_changes.csv", *self.run_dir.glob("transfer_*_end.csv")):
                stale.unlink(missing_ok=True)
        self.result = training.train_grpo(
            self.cfg, self.model, self.tokenizer, reward_funcs, self.train_dataset(), self.run_dir,
            backend=self.backend, extra_metrics=extra_metrics, trainer_cls=trainer_cls,
            extra_callbacks=extra_callbacks)
        return self.result

    # ---------------------------------------------------------------------------------
    # The held-out probe: GRPO's own effect, from the after-cold-start policy (helpers/probe.py)
    probe_metrics: dict[str, str] = probe.PROBE_METRICS  # metric name -> per-question column of run_probe's frame
    probe_key = "question"  # the column that pairs two probes row by row
    probe_dropna = False  # True: pair only rows scored in both probes; False: an unscored row is an error

    def probe_rows(self) -> list[dict]:
        return probe.probe_rows(self.cfg, self.cfg.probe_size)

    def run_probe(self, model, rows, label: str, lora_path=None):
        """Per-question DataFrame of the probe on `model` (the GSM8K probe: probe.run)."""
        return probe.run(model, self.tokenizer, rows, self.cfg, backend=self.backend, lora_path=lora_path, label=label)

    def probe(self, label: str):
        """The probe of the current policy (per-question DataFrame), cached as probe_<label>.csv: "start" after the
        cold start (before GRPO), "end" after GRPO. None when cfg.probe_size is 0 or off the main process."""
        if not self.cfg.probe_size or not self.is_main:
            return None
        lora = self.adapter_dir if self.backend == "unsloth" else None
        if label != "start":
            self.check_adapter(lora)
        df = probe.cached(self.run_dir / f"probe_{label}.csv", lambda: self.run_probe(
            self.model, self.probe_rows(), f"probe {label}", lora))
        return self._keep_probe(label, df)

    def _keep_probe(self, label: str, df):
        self.probes[label] = df
        print(f"[probe] {label}: {len(df)} held-out rows: "
              + ", ".join(f"{k} {v:.3f}" for k, v in probe.summary(df, self.probe_metrics).items()))
        return df

    def transfer(self, label: str) -> dict:
        """{set name: per-question DataFrame} of greedy answers on the transfer sets (SVAMP, and GSM8K when the task
        is not GSM8K itself; cfg.transfer_size problems each), cached as transfer_<set>_<label>.csv. Call with
        "start" after the cold start and "end" after GRPO; {} when cfg.transfer_size is 0 or off the main process."""
        if not self.cfg.transfer_size or not self.is_main:
            return {}
        lora = self.adapter_dir if self.backend == "unsloth" else None
        out = {}
        for name in tasks.transfer_sets(self.cfg.task):
            rows = tasks.transfer_rows(name, self.cfg.transfer_size, self.cfg.dataset_source)
            out[name] = probe.cached(self.run_dir / f"transfer_{name}_{label}.csv", lambda rows=rows: self.run_probe(
                self.model, rows, f"transfer {name} {label}", lora))
            print(f"[transfer] {name} {label}: {len(rows)} problems: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in probe.summary(out[name], TRANSFER_METRICS).items()))
        self.transfers[label] = out
        return out

    def transfer_changes(self):
        """After GRPO minus after cold start on each transfer set (accuracy and format), paired bootstrap 95 %
        intervals; one row per (set, metric), saved as transfer_changes.csv."""
        import pandas as pd

        if not self.cfg.transfer_size or not self.is_main:
            return pd.DataFrame(columns=["set", "metric", "delta", "ci95_lo", "ci95_hi", "verdict", "n"])
        if "start" not in self.transfers or "end" not in self.transfers:
            raise RuntimeError("Run exp.transfer('start') after the cold start and exp.transfer('end') after GRPO first.")
        tables = []
        for name, end in self.transfers["end"].items():
            table = probe.changes(end, self.transfers["start"][name], names=("after cold start", "after GRPO"),
                                  columns=TRANSFER_METRICS)
            tables.append(table.assign(set=name))
        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        if self.is_main and len(table):
            runtime.atomic_write_csv(self.run_dir / "transfer_changes.csv", table)
        return table

    def probe_by_level(self, column: str = "strict_correct"):
        """The probe's change in `column` (default greedy strict accuracy) per difficulty level of the arith task
        (one group "all" on tasks without levels), paired intervals: probe.group_changes."""
        if "start" not in self.probes or "end" not in self.probes:
            raise RuntimeError("Run exp.probe('start') after the cold start and exp.probe('end') after GRPO first.")
        rows = self.probe_rows()
        levels = [f"level {r['level']}" for r in rows] if all("level" in r for r in rows) else None
        return probe.group_changes(self.probes["end"], self.probes["start"], levels, column)

    def probe_callbacks(self) -> list:
        """[ProbeCallback] running the probe at each checkpoint save (hf backend; on Unsloth vLLM generates from
        saved adapters, so only the start and end probes run). Pass as train(..., extra_callbacks=...)."""
        if not self.cfg.probe_size or self.backend != "hf":
            return []
        return [probe.ProbeCallback(self.run_dir / "probe.csv", self.tokenizer, self.probe_rows(), self.cfg,
                                    samples_dir=self.run_dir / "probe_steps", metrics=self.probe_metrics,
                                    run_fn=self.run_probe)]

    def probe_changes(self):
        """After GRPO minus after cold start, per probe metric, with the paired bootstrap 95 % interval and a
        verdict ("up", "down", "within noise"); saved as probe_changes.csv."""
        if "start" not in self.probes or "end" not in self.probes:
            raise RuntimeError("Run exp.probe('start') after the cold start and exp.probe('end') after GRPO first.")
        table = probe.changes(self.probes["end"], self.probes["start"], names=("after cold start", "after GRPO"),
                              columns=self.probe_metrics, key=self.probe_key, dropna=self.probe_dropna)
        if self.is_main:
            runtime.atomic_write_csv(self.run_dir / "probe_changes.csv", table)
        return table

    def probe_history(self):
        """Probe metric means against GRPO step: the start probe at step 0, each checkpoint, the end probe."""
        return probe.history(self.run_dir, self.probe_metrics)

    # ---------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        sft = self.cfg.sft_steps if self.cfg.sft_steps else 0
        steps = self.result.steps if self.result else self.cfg.max_steps
        return plots.run_label(self.cfg.model_name, f"{sft} SFT + {steps} GRPO" if sft else steps,
                               precision=self.cfg.precision, task=self.cfg.task)

    def figure_paths(self, name: str) -> list[Path]:
        return [d / name for d in (self.run_dir, self.figures_dir) if d is not None]

    def table(self):
        """Before/after table (one row per evaluated label), saved as eval_table.csv."""
        if not self.is_main:
            return None
        return evaluation.comparison_table([s for s, _ in self.evals.values()], self.run_dir / "eval_table.csv")

    def report(self, prefix: str) -> dict:
        """Save the eval table, curves and before/after bars; return {name: path} of what was written."""
        if not self.is_main:
            return {}
        table = self.table()
        saved = {"eval_table": self.run_dir / "eval_table.csv"}
        if self.result is not None and self.result.metrics_csv.exists():
            self.plot_curves(self.result.metrics_csv, self.figure_paths(f"{prefix}_training_curves.png"))
            saved["curves"] = self.run_dir / f"{prefix}_training_curves.png"
        if len(table):
            self.plot_bars(table, self.figure_paths(f"{prefix}_before_after.png"))
            saved["bars"] = self.run_dir / f"{prefix}_before_after.png"
        runtime.atomic_write_json(self.run_dir / "summary.json", {
            "label": self.label, "eval": table.to_dict(orient="records"), "sft": self.sft,
            "train": {"status": self.result.status, "steps": self.result.steps} if self.result else None})
        return saved

    def plot_curves(self, metrics_csv, save_to):
        plots.training_curves({self.cfg.run_name: metrics_csv}, self.label, smooth=3, save_to=save_to)

    def plot_bars(self, table, save_to):
        plots.accuracy_bars(table, self.label, save_to=save_to)

    def saved_files(self) -> list[str]:
        """What is in the run directory, one line per entry (the notebooks' closing cell)."""
        return runtime.saved_files(self.run_dir) if self.is_main else []


def run_stage(exp: Experiment, make_rewards: Callable[[Experiment], tuple], prefix: str, *,
              probes: bool = False) -> Experiment:
    """The stage body of notebooks 01/02: baseline eval, cold start, GRPO, eval, report. `make_rewards(exp)` returns
    (reward functions, extra_metrics or None), built after the cold start (which replaces exp.model on hf).
    `probes=True` adds the held-out probe after the cold start, at the checkpoints and after GRPO, as the notebooks
    do (each cached in the run directory)."""
    exp.evaluate("before")
    exp.cold_start()
    reward_funcs, extra_metrics = make_rewards(exp)
    if probes:
        exp.probe("start")
    exp.train(reward_funcs, extra_metrics=extra_metrics, extra_callbacks=exp.probe_callbacks() if probes else ())
    exp.evaluate("after")
    exp.report(prefix)
    if probes:
        exp.probe("end")
    return exp


def rule_stage_rewards(exp: Experiment) -> tuple[list, None]:
    """Notebook 01's reward functions for `exp` (run_stage's make_rewards): the rule rewards, no extra metrics."""
    return list(exp.rule_rewards().values()), None


def logprob_stage_rewards(exp: Experiment, transform: str = "mean", scorer: str = "policy") -> tuple[list, Callable]:
    """Notebook 02's reward functions for `exp`: the rule rewards (correctness weighted 0 by logprob_weights, logged
    only) + the logprob reward on exp's current model; its per-step stats as extra metrics."""
    from .logprob import logprob_reward

    lp = logprob_reward(exp.model, exp.tokenizer, transform=transform, scorer=scorer)
    return list(exp.rule_rewards().values()) + [lp], lp.stats.flush


def run_rule_stage(cfg: config_mod.RunConfig, *, probes: bool = False, **kw) -> Experiment:
    """Notebook 01 end to end: baseline eval, cold start, GRPO with rule rewards, eval, report."""
    return run_stage(Experiment(cfg, **kw), rule_stage_rewards, "01", probes=probes)


def run_logprob_stage(cfg: config_mod.RunConfig, transform: str = "mean", scorer: str = "policy", *,
                      probes: bool = False, **kw) -> Experiment:
    """Notebook 02's training end to end: rule rewards (correctness weight 0, logged only) + the logprob reward."""
    return run_stage(Experiment(cfg, **kw), lambda exp: logprob_stage_rewards(exp, transform, scorer), "02",
                     probes=probes)


def logprob_weights(transform: str, weight: float = 1.0) -> dict[str, float]:
    """Reward weights for the logprob stage: format rewards 1, correctness 0 (logged only), logprob `weight`."""
    from .config import RULE_REWARDS

    return {**dict.fromkeys(RULE_REWARDS, 1.0), "correctness_reward": 0.0, f"logprob_{transform}_reward": weight}


def baseline_results(cfg: config_mod.RunConfig, run_name: str, backend: str, *, stage: str = "rule",
                     probes: bool = False) -> dict:
    """Notebook 01's (stage="rule") or 02's (stage="logprob", mean transform) finished results; when absent, or
    without the probe files and `probes=True`, run that stage now (CPU/hf backend only; cached work is reused)."""
    if stage not in ("rule", "logprob"):
        raise ValueError(f"stage must be 'rule' or 'logprob', got {stage!r}")
    found = load_run_results(cfg, run_name)
    if found is not None and found["config"].get("task", "gsm8k") != cfg.task:
        raise config_mod.ConfigError(
            f"The finished run '{run_name}' was trained on task {found['config'].get('task', 'gsm8k')!r}, but this "
            f"comparison needs task {cfg.task!r} (its probe questions differ, so nothing can be paired). Name another "
            "run (RULE_RUN / LOGPROB_RUN / BASELINE_RUN): it is trained here when missing.")
    if found is not None and (not probes or all((found["run_dir"] / f"probe_{x}.csv").exists()
                                                for x in ("start", "end"))):
        return found
    notebook = "01" if stage == "rule" else "02"
    if backend == "unsloth":
        missing = "No finished" if found is None else "No held-out probe (probe_start.csv, probe_end.csv) in the"
        raise RuntimeError(f"{missing} '{run_name}' run in {runtime.runs_root(cfg.project)}. On GPU, run notebook "
                           f"{notebook} first (one vLLM engine per session), then re-run this notebook.")
    from .config import RULE_REWARDS

    print(f"No finished '{run_name}' run{' with its probe' if found else ''} found: running notebook {notebook}'s "
          "stage now (same preset).")
    if stage == "rule":
        run_rule_stage(cfg.override(run_name=run_name, reward_weights=dict.fromkeys(RULE_REWARDS, 1.0)),
                       backend=backend, probes=probes)
    else:
        run_logprob_stage(cfg.override(run_name=run_name, reward_weights=logprob_weights("mean")), backend=backend,
                          probes=probes)
    return load_run_results(cfg, run_name)


def load_run_results(cfg: config_mod.RunConfig, run_name: str) -> dict | None:
    """A finished run's eval table and metrics path, or None when it is absent or unfinished."""
    import pandas as pd

    rd = runtime.runs_root(cfg.project) / run_name
    if not (training.is_finished(rd) and (rd / "eval_table.csv").exists()):
        return None
    return {"run_dir": rd, "table": pd.read_csv(rd / "eval_table.csv"), "metrics_csv": rd / "metrics.csv",
            "config": json.loads((rd / "config.json").read_text())}
