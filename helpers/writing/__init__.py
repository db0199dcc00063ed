"""Creative writing (notebook 04): plan, then continue a story; reward = how likely the plan makes a reference.

The task: the model reads the opening of a story, writes a plan inside `<reasoning>` and the rest of
the story inside `<answer>`. As in notebook 02, the model's own answer is dropped: the reward scores
the *reference* continuation y given the prompt x and the plan a,

    mean  (default)  R = (1/|y|) Σ log P(y_t | x, a, y_<t)       mean token log-prob: references differ in length
    vrcli            I = 100 · (1 − PPL(y | x, a) / PPL(y | x))  relative perplexity improvement over no plan,
                     scored by the frozen model, then bucketed into a few levels (VR-CLI, Gurung & Lapata 2025)

Plans are read from the completion (`extract_plan`), cut to `max_plan_tokens`, and re-inserted into one
canonical context, so "no plan", "empty plan" and a real plan differ only by the plan's text:
    prompt + "<reasoning>\\n" + plan + "\\n</reasoning>\\n<answer>\\n"     (empty plan: no blank line)

Data: bundled short stories written for this project (CC0, offline) or TinyStories from the hub (Colab),
split into a training set and a held-out set by a hash of each story's id.

One job per module: `settings` (system prompt, VR-CLI levels, WRITING_OVERRIDES, writing_config), `stories`
(data, prompts, datasets), `plans` (plan parsing and the canonical scoring context), `reward` (writing_reward),
`evaluation` (held-out evaluation and its table), `story_metrics` (loops, names kept, reference recall, ended:
text only, CPU), `judge` (optional pairwise judge), `curves` (training curves),
`experiment` (WritingExperiment, run_writing_stage, the KL remedy and its paired comparison). Every public name is also importable from `helpers.writing`.
"""
from .settings import (BUNDLED_STORIES, HUB_DATASET, HUB_LICENSE, WRITING_SYSTEM_PROMPT, USER_TEMPLATE,
    VRCLI_THRESHOLDS, VRCLI_LEVELS, KINDS, WRITING_OVERRIDES, writing_weights, writing_config)
from .stories import (split_sentences, split_story, trim_to_tokens, is_heldout, heldout_split,
    load_bundled_stories, load_hub_stories, load_for_run, make_prompt, format_example, grpo_dataset, sft_dataset)
from .plans import extract_continuation, extract_plan, limit_plan, plan_context
from .reward import mean_logprob, relative_improvement, vrcli_bucket, writing_reward
from .evaluation import PROBE_METRICS, PROBE_PANELS, before_after_pairs, distinct_n, evaluate, score_plans, summarize
from .judge import JUDGE_PROMPT, judge_preferences, load_judge
from .curves import writing_curves
from .story_metrics import (STORY_METRICS, add_story_metrics, character_names, names_kept, reference_recall,
    repeat_3gram, story_ended)
from .experiment import (REMEDY_BETA, WritingExperiment, cold_start_rows, compare_runs, remedy_config,
    remedy_experiment, run_writing_stage, sft_grpo_split)

__all__ = [
    "BUNDLED_STORIES", "HUB_DATASET", "HUB_LICENSE", "WRITING_SYSTEM_PROMPT", "USER_TEMPLATE",
    "VRCLI_THRESHOLDS", "VRCLI_LEVELS", "KINDS", "WRITING_OVERRIDES", "writing_weights", "writing_config",
    "split_sentences", "split_story", "trim_to_tokens", "is_heldout", "heldout_split", "load_bundled_stories",
    "load_hub_stories", "load_for_run", "make_prompt", "format_example", "grpo_dataset", "sft_dataset",
    "extract_continuation", "extract_plan", "limit_plan", "plan_context", "mean_logprob",
    "relative_improvement", "vrcli_bucket", "writing_reward", "PROBE_METRICS", "PROBE_PANELS", "before_after_pairs", "distinct_n", "evaluate",
    "score_plans", "summarize", "JUDGE_PROMPT", "judge_preferences", "load_judge", "writing_curves",
    "WritingExperiment", "cold_start_rows", "run_writing_stage", "sft_grpo_split",
    "STORY_METRICS", "add_story_metrics", "character_names", "names_kept", "reference_recall", "repeat_3gram",
    "story_ended", "REMEDY_BETA", "compare_runs", "remedy_config", "remedy_experiment",
]
