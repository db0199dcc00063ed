"""Notebook 04 end to end: WritingExperiment (pipeline.Experiment on stories), the cold-start rows and the
SFT/GRPO split of the stories."""
from __future__ import annotations

from typing import Sequence

from .. import pipeline, plots, probe, runtime
from ..config import RunConfig
from .curves import writing_curves
from .evaluation import PROBE_METRICS, evaluate, summarize
from .story_metrics import STORY_METRICS, add_story_metrics
from .reward import writing_reward
from .stories import format_example, grpo_dataset, load_for_run, sft_dataset, trim_to_tokens

def cold_start_rows(rows: Sequence[dict], tokenizer, cfg: RunConfig) -> list[dict]:
    """Stories that have an author's plan, as cold-start targets: the plan, then the story trimmed so the
    whole completion fits in 3/4 of max_completion_length (GRPO's generations then end with </answer>)."""
    out = []
    budget = int(cfg.max_completion_length * 0.75)
    for r in rows:
        if not r.get("plan"):
            continue
        overhead = len(tokenizer(format_example(r["plan"], ""), add_special_tokens=False)["input_ids"])
        story = trim_to_tokens(r["continuation"], tokenizer, max(8, budget - overhead))
        out.append({**r, "completion": format_example(r["plan"], story)})
    return out


class WritingExperiment(pipeline.Experiment):
    """pipeline.Experiment for the writing task: stories instead of GSM8K, its own evaluation and plots."""

    pre_training_labels = ("before", "after_sft")
    sft_kwargs = {"completion_fn": lambda r: r["completion"], "dataset_fn": sft_dataset}

    def load_rows(self):
        """(GRPO stories, held-out stories); runs after the tokenizer loads (continuations trimmed in tokens)."""
        train, held = load_for_run(self.cfg, self.tokenizer)
        self.sft_pool, grpo = sft_grpo_split(train, self.cfg.sft_steps > 0)
        print(f"[data] {len(grpo)} stories for GRPO, {len(self.sft_pool)} for the cold start, "
              f"{len(held)} held out ({train[0]['source'] if train else '-'})")
        return grpo, held

    def train_dataset(self):
        return grpo_dataset(self.train_rows)

    def sft_rows(self):
        return cold_start_rows(self.sft_pool, self.tokenizer, self.cfg)

    def cold_start(self, sft_dir=None) -> dict:
        if self.cfg.sft_steps and not self.sft_pool:
            print("[sft] no stories with an author's plan (hub data): the cold start has nothing to learn from.")
            self.sft = {"sft": "skipped: no plans in the data"}
            return self.sft
        return super().cold_start(sft_dir)

    def run_eval(self, rows, label: str, lora_path):
        return evaluate(self.model, self.tokenizer, rows, self.cfg, backend=self.backend, label=label,
                        lora_path=lora_path)

    @staticmethod
    def read_samples(path):
        import pandas as pd

        df = pd.read_csv(path, keep_default_na=False, na_values=["nan", "NaN", ""])  # scores may be NaN
        for col in ("plan", "story", "author_plan", "completion"):  # texts may be empty, never NaN
            if col in df:
                df[col] = df[col].fillna("").astype(str)
        return df if all(c in df for c in STORY_METRICS.values()) else add_story_metrics(df)  # older caches

    @staticmethod
    def summarize(df, label: str) -> dict:
        return summarize(df, label)

    @property
    def label(self) -> str:
        """Figure label: model, the stories task (not cfg.task, the maths task of the other notebooks), steps, the KL
        weight when there is one, hardware."""
        sft = self.cfg.sft_steps if self.cfg.sft_steps else 0
        steps = self.result.steps if self.result else self.cfg.max_steps
        kl = f" (KL β={self.cfg.beta:g})" if self.cfg.beta else ""
        return plots.run_label(self.cfg.model_name, (f"{sft} SFT + {steps} GRPO" if sft else f"{steps}") + kl,
                               precision=self.cfg.precision, task="stories")

    # The probe (pipeline.Experiment.probe): the held-out stories, evaluated as in `evaluate`. The start and end
    # probes are the after-cold-start and after-GRPO evaluations themselves (no second generation); the checkpoints
    # are probed during training (probe_callbacks). A story whose reference does not fit is NaN and left unpaired.
    probe_metrics = PROBE_METRICS
    probe_key = "id"
    probe_dropna = True

    def probe_rows(self):
        return self.test_rows

    def run_probe(self, model, rows, label: str, lora_path=None):
        return evaluate(model, self.tokenizer, rows, self.cfg, backend=self.backend, label=label,
                        lora_path=lora_path)[1]

    def probe(self, label: str):
        """"start": the evaluation after the cold start (before GRPO; "before" when there is no cold start), "end":
        the evaluation after GRPO; saved as probe_<label>.csv for probe_history. None when cfg.probe_size is 0."""
        if not self.cfg.probe_size or not self.is_main:
            return None
        ev = "after" if label == "end" else "after_sft" if self.cfg.sft_steps else "before"
        path = self.run_dir / f"probe_{label}.csv"
        df = probe.cached(path, lambda: self.evaluate(ev)[1])
        if not all(c in df for c in STORY_METRICS.values()):  # cached before the story metrics: add them, from the texts
            df = add_story_metrics(df)
            if "story" in df:
                runtime.atomic_write_csv(path, df)  # so probe_history (which reads the files) has them too
        return self._keep_probe(label, df)

    def plot_curves(self, metrics_csv, save_to):
        kind = next((f.split("_")[1] for f in self.cfg.reward_weights if f.startswith("writing_")), "mean")
        writing_curves(metrics_csv, kind, self.label, save_to=save_to)

    def plot_bars(self, table, save_to):
        plots.writing_bars(table, self.label, save_to=save_to)


def sft_grpo_split(train: Sequence[dict], cold_start: bool) -> tuple[list[dict], list[dict]]:
    """(cold-start stories, GRPO stories): with a cold start on author plans, alternate stories go to each
    side, so GRPO never sees a prompt whose author plan the model was fine-tuned on."""
    if not cold_start or not any(r.get("plan") for r in train):
        return [], list(train)
    return list(train[0::2]), list(train[1::2])


def run_writing_stage(cfg: RunConfig, kind: str = "mean", **kw):
    """Notebook 04 end to end: held-out eval, cold start, GRPO with the writing reward (the held-out stories probed
    at each checkpoint), eval, report, the probe's changes (after GRPO minus after cold start)."""
    from ..rewards import soft_format_reward, strict_format_reward

    exp = WritingExperiment(cfg, **kw)
    exp.evaluate("before")
    exp.cold_start()
    if cfg.sft_steps:
        exp.evaluate("after_sft")
    exp.probe("start")
    wr = writing_reward(exp.model, exp.tokenizer, kind, max_plan_tokens=cfg.max_plan_tokens)
    exp.train([strict_format_reward, soft_format_reward, wr], extra_metrics=wr.stats.flush,
              extra_callbacks=exp.probe_callbacks())
    exp.evaluate("after")
    exp.report("04")
    if exp.probe("end") is not None:
        exp.probe_changes()
    return exp


# ---------------------------------------------------------------------------------------
# The remedy (notebook 04, part 7): the same GRPO run with a KL term, from the same cold start
# The remedy's KL weight: above TRL's default 0.04, which the GPU presets' plain runs already train with (the cpu
# preset's plain run uses 0), so on every preset the remedy adds KL pull that the plain run does not have.
REMEDY_BETA = 0.1
SHARED_BEFORE_GRPO = ("eval_samples_before.csv", "eval_samples_after_sft.csv", "probe_start.csv")


def remedy_config(cfg: RunConfig, beta: float = REMEDY_BETA) -> RunConfig:
    """`cfg` with a KL term of weight `beta` toward the cold-start policy; its own run folder <run>_kl<beta>.
    `beta` must exceed the plain run's own (the GPU presets train with TRL's 0.04), else there is no remedy."""
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not beta > cfg.beta:
        raise ValueError(f"The remedy is a stronger KL term than the plain run's (beta={cfg.beta:g}): got beta={beta!r}. "
                         f"Set REMEDY_BETA above {cfg.beta:g}, e.g. {max(REMEDY_BETA, 2.5 * cfg.beta):g}.")
    return cfg.override(beta=float(beta), run_name=f"{cfg.run_name}_kl{beta:g}")


def remedy_experiment(plain: "WritingExperiment", beta: float = REMEDY_BETA, **kw) -> "WritingExperiment":
    """A second WritingExperiment that trains exactly like `plain` plus a KL term of weight `beta`, so the two
    GRPO runs can be paired story by story.

    It starts from the SAME cold start: `plain`'s sft_lora is loaded, not retrained. The evaluations made before
    GRPO (greedy, of that same policy) are copied from `plain`'s folder rather than generated again. hf: a fresh
    model load (the plain run's model keeps its GRPO adapter); unsloth: the plain run's model with its LoRA reset
    (one vLLM engine per session), the cold start then reloaded into it."""
    import shutil

    if plain.sft_dir is None and plain.cfg.sft_steps:
        raise RuntimeError("Run the plain experiment's cold_start() first: the remedy starts from the same one.")
    cfg = remedy_config(plain.cfg, beta)
    model = tokenizer = None
    if plain.backend == "unsloth":
        from ..ablations.runner import reset_lora

        reset_lora(plain.model, cfg.seed)
        model, tokenizer = plain.model, plain.tokenizer
    exp = WritingExperiment(cfg, backend=plain.backend, model=model, tokenizer=tokenizer, **kw)
    for name in SHARED_BEFORE_GRPO:
        src, dst = plain.run_dir / name, exp.run_dir / name
        if src.exists() and not dst.exists() and exp.is_main:
            shutil.copyfile(src, dst)
    exp.cold_start(sft_dir=plain.sft_dir)
    return exp


def compare_runs(plain_df, remedy_df, *, names: tuple[str, str] = ("plain GRPO", "with KL"), seed: int = 0):
    """Remedy minus plain on the same held-out stories after GRPO, per probe metric (the reward's reference log-prob,
    plan length, the story metrics): the two means, the paired difference, its bootstrap 95 % interval and verdict."""
    return probe.changes(add_story_metrics(remedy_df), add_story_metrics(plain_df), names=names,
                         columns=PROBE_METRICS, key="id", dropna=True, seed=seed)
