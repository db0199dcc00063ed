"""Which questions a run trains, evaluates and probes on: the task registry.

A task names where the rows come from; every row is in the GSM8K format ({"question", "answer": "... #### N"}),
so prompts, rewards, the cold start (data.format_solution) and the evaluation are the same for every task.

    TASKS = ("gsm8k", "arith")
    "gsm8k": GSM8K (helpers.data.load_gsm8k_rows): train split for training, the first n test rows for the
             evaluations, test rows PROBE_OFFSET.. for the probe (as helpers.probe.probe_rows).
    "arith": generated arithmetic word problems of levels 1-3 (helpers.arith.splits(arith.SEED)): a training pool
             of 3000 (levels 1/2/3 as 0.4/0.4/0.2 in every prefix), 300 evaluation and 450 probe questions
             (levels alternating), disjoint by question text. For a small model that solves ~0 % of GSM8K.
    transfer_rows("svamp" | "gsm8k", n): held-out sets of another distribution, to see whether a gain transfers.

How a `task` field would select rows (RunConfig has none yet): a run with task="arith" would call

    train = tasks.train_rows(cfg.task, cfg.train_size, cfg.dataset_source)
    evals = tasks.eval_rows(cfg.task, cfg.eval_size, cfg.dataset_source)
    probe = tasks.probe_rows(cfg.task, cfg.probe_size, cfg.dataset_source)

where today data.load_for_run(cfg) and probe.probe_rows(cfg) are called; task="gsm8k" gives exactly the rows
those two give now. `dataset_source` matters for GSM8K only (arith is generated, SVAMP is bundled).

Imports only the standard library, helpers.config, helpers.data and helpers.arith (no torch, no transformers);
helpers.data does not import this module.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from . import arith
from .config import ConfigError
from .data import load_gsm8k_rows

TASKS = ("gsm8k", "arith")
TRANSFER_SETS = ("svamp", "gsm8k")
GSM8K_PROBE_OFFSET = 1000  # evaluations use the first eval_size (<= 200) test rows; the probe starts far after them
# (helpers.probe.PROBE_OFFSET is this constant)
SVAMP_FILE = Path(__file__).parent / "data_files" / "svamp" / "SVAMP.json"
# Answers of the bundled SVAMP.json that contradict the problem's own equation and text (the file stays untouched).
SVAMP_ERRATA = {"chal-680": 5}  # 4 apples, 2 picked, 3 new grow: ( ( 4 - 2 ) + 3 ) = 5, labelled 1.0


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"Unknown task {task!r}. Choose one of {TASKS}.")


def _first(rows: list[dict], n: int | None, what: str) -> list[dict]:
    if n is None:
        return rows
    if n < 0:
        raise ConfigError(f"{what}: n must be >= 0, got {n}.")
    if n > len(rows):
        print(f"[tasks] asked for {n} {what} rows, only {len(rows)} available: using all of them.")
    return rows[:n]


def train_rows(task: str, n: int | None = None, source: str = "auto") -> list[dict]:
    """The first `n` training rows of `task` (all when None): GSM8K's train split, or the arith training pool
    (levels 1/2/3 mixed 0.4/0.4/0.2 in every prefix). `source` (auto/hub/bundled) is GSM8K's dataset_source."""
    _check_task(task)
    if task == "gsm8k":
        return load_gsm8k_rows("train", source, n)
    return _first(arith.splits(arith.SEED)["train"], n, "arith train")


def eval_rows(task: str, n: int | None = None, source: str = "auto") -> list[dict]:
    """The first `n` evaluation rows of `task`: GSM8K's first n test rows, or the arith evaluation split
    (levels alternating 1, 2, 3, so any prefix is balanced)."""
    _check_task(task)
    if task == "gsm8k":
        return load_gsm8k_rows("test", source, n)
    return _first(arith.splits(arith.SEED)["eval"], n, "arith eval")


def probe_rows(task: str, n: int = 100, source: str = "auto", offset: int = GSM8K_PROBE_OFFSET) -> list[dict]:
    """The held-out probe of `task`: GSM8K test rows offset..offset+n (exactly helpers.probe.probe_rows), or the
    first n of the arith probe split (levels alternating). ConfigError when fewer than n exist. `offset` is GSM8K's
    only (< 200 would overlap the evaluation rows)."""
    _check_task(task)
    if n < 0:
        raise ConfigError(f"probe: n must be >= 0, got {n}.")
    if task == "gsm8k":
        if offset < 200:
            raise ConfigError(f"probe offset {offset} overlaps the evaluation rows (the first eval_size <= 200).")
        rows = load_gsm8k_rows("test", source)[offset:offset + n]
    else:
        rows = arith.splits(arith.SEED)["probe"][:n]
    if len(rows) < n:
        raise ConfigError(f"The {task} probe needs {n} questions; only {len(rows)} exist.")
    return rows


def transfer_sets(task: str) -> tuple[str, ...]:
    """The transfer sets of a run on `task`: SVAMP always, GSM8K unless it is the task itself."""
    _check_task(task)
    return tuple(name for name in TRANSFER_SETS if name != task)


def transfer_rows(name: str, n: int | None = None, source: str = "auto") -> list[dict]:
    """A transfer set in the GSM8K row format: "svamp" (load_svamp_rows) or "gsm8k" (the first n test rows, the
    same as eval_rows("gsm8k", n): the transfer target of a run trained on arith)."""
    if name not in TRANSFER_SETS:
        raise ConfigError(f"Unknown transfer set {name!r}. Choose one of {TRANSFER_SETS}.")
    if name == "svamp":
        return load_svamp_rows(n)
    return load_gsm8k_rows("test", source, n)


# ---------------------------------------------------------------------------------------
# SVAMP
def svamp_question(body: str, question: str) -> str:
    """SVAMP's Body and Question as one text. Most bodies end with a full stop; 358 of the 1000 do not, and 346 of
    those end in a conditional clause that the question completes ("... If he grew 18 more inches" + "How long is
    his hair now?"): these are joined with a comma and the question's first letter lowercased ("..., how long is
    his hair now?"). The other bodies without a final stop ("Then he got 10 new customers") get one."""
    body, question = body.strip(), question.strip()
    if not body:
        return question
    if body[-1] in ".?!":
        return f"{body} {question}"
    last_sentence = re.split(r"(?<=[.!?])\s+", body)[-1]
    if last_sentence.startswith("If ") and question[:1].isupper():
        return f"{body}, {question[0].lower()}{question[1:]}"
    return f"{body}. {question}"


def load_svamp_rows(n: int | None = None, path: Path | str = SVAMP_FILE) -> list[dict]:
    """SVAMP (bundled data_files/svamp/SVAMP.json) as GSM8K-format rows, the first `n` if given:
    {"question": Body joined to Question (svamp_question), "answer": "#### <int>", "equation": SVAMP's equation
    with whole floats written as integers ("( 76 - 25 )"), "type": "Subtraction"/..., "id": "chal-1"}.

    Only rows whose answer is a whole number are kept, since the rewards and the evaluation compare against a GSM8K
    style integer answer ("#### N"): in the bundled copy all 1000 answers are whole numbers, so none is dropped
    (a dropped row would be reported on stdout). The answer of `chal-680` is corrected by SVAMP_ERRATA.
    There is no worked solution, so these rows are for evaluation only (not for the cold start)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Bundled SVAMP file {path} is missing. Re-clone the repository or reinstall the package.")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}). The file is corrupt.") from exc
    rows, dropped = [], 0
    for i, e in enumerate(entries):
        try:
            value = SVAMP_ERRATA.get(e["ID"], e["Answer"])
            if not float(value).is_integer():
                dropped += 1
                continue
            rows.append({"question": svamp_question(e["Body"], e["Question"]), "answer": f"#### {int(value)}",
                         "equation": re.sub(r"(\d+)\.0\b", r"\1", e["Equation"]).strip(), "type": e["Type"],
                         "id": e["ID"]})
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ConfigError(f"{path}: entry {i} is not a valid SVAMP row ({exc!r}). The file is corrupt.") from exc
    if dropped:
        print(f"[tasks] SVAMP: dropped {dropped} of {len(entries)} problems whose answer is not a whole number.")
    return _first(rows, n, "SVAMP")
