"""Story metrics that run on a CPU in milliseconds, from the texts alone (no model, no judge).

They describe a story; they do not grade it. Each one catches a failure a small model shows:

    repeat_3gram      share of the story's word 3-grams already seen earlier in it (loops; 0 = none)
    names_kept        share of the opening's character names that the story mentions again (did it stay
                      with this story's people?); NaN when the opening names nobody
    reference_recall  share of the reference continuation's content words that the story uses too (did it
                      tell the events the author told?); the reward scores the same reference, so read this
                      one as "closer to the reference", not as "better"
    story_ended       1 when the story ends a sentence (., !, ? or a closing quote), else 0 (cut off)

`add_story_metrics(df)` adds the four columns to an evaluation DataFrame (columns "opening", "reference",
"story"), so a cached evaluation from before these metrics existed gets them too.
"""
from __future__ import annotations

import math
import re

_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
# Capitalised words that start sentences or address someone, not names (checked against the bundled stories).
_NOT_NAMES = frozenset("""a an the and but so then when while one once there they he she it we i you his her its
their our my your this that these those in on at by for with from to of after before soon each every all some
no yes oh hello hi mom dad mother father mommy daddy grandma grandpa mr mrs ms miss look come what why how who where
let please thank thanks good today tomorrow yesterday finally suddenly later aunt uncle monday tuesday wednesday
thursday friday saturday sunday""".split())
_STOP = _NOT_NAMES | frozenset("""was were is are be been had has have did does do said says not very just
into out up down over under again too also than them him me us there here only little big could would should
will can may might must about around back away like went got get made make""".split())
STORY_METRICS = {"repeat_3gram": "repeat_3gram", "names_kept": "names_kept",
                 "reference_recall": "reference_recall", "story_ended": "story_ended"}


def _words(text: str) -> list[str]:
    return _WORD.findall(text or "")


def repeat_3gram(story: str) -> float:
    """Share of word 3-grams (lower case) that already occurred earlier in the same story; NaN under 3 words."""
    words = [w.lower() for w in _words(story)]
    grams = [tuple(words[k:k + 3]) for k in range(len(words) - 2)]
    if not grams:
        return float("nan")
    seen: set = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def character_names(opening: str) -> set[str]:
    """Capitalised words of `opening` that are not sentence starters or pronouns and never appear in lower case
    there: "Rufus", "Leo" (lower-cased)."""
    words = [re.sub(r"'s$", "", w) for w in _words(opening)]  # "Rosa's" -> "Rosa"
    lower = {w for w in words if w.islower()}
    return {w.lower() for w in words
            if w[0].isupper() and w.lower() not in _NOT_NAMES and w.lower() not in lower and len(w) > 1}


def names_kept(opening: str, story: str) -> float:
    """Share of the opening's character names that the story mentions; NaN when the opening has none."""
    names = character_names(opening)
    if not names:
        return float("nan")
    used = {re.sub(r"'s$", "", w.lower()) for w in _words(story)}
    return len(names & used) / len(names)


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _words(text) if len(w) >= 4 and w.lower() not in _STOP}


def reference_recall(reference: str, story: str) -> float:
    """Share of the reference's content words (4+ letters, not function words) that the story uses."""
    ref = content_words(reference)
    if not ref:
        return float("nan")
    return len(ref & content_words(story)) / len(ref)


def story_ended(story: str) -> float:
    """1.0 when the story's last character ends a sentence (. ! ? or a closing quote after one), else 0.0."""
    s = (story or "").rstrip()
    return float(bool(re.search(r"[.!?][\"'”’)]*$", s)))


def add_story_metrics(df):
    """`df` with the four story-metric columns, computed from its "story" texts (and "opening" / "reference": a
    metric whose text column is missing is NaN). A frame without a "story" column comes back unchanged."""
    df = df.copy()
    if "story" not in df:
        return df
    nan = float("nan")

    def texts(col):
        if col not in df:
            return None
        return ["" if (isinstance(x, float) and math.isnan(x)) else str(x) for x in df[col]]

    openings, refs, stories = texts("opening"), texts("reference"), texts("story")
    df["repeat_3gram"] = [repeat_3gram(s) for s in stories]
    df["names_kept"] = [names_kept(o, s) for o, s in zip(openings, stories)] if openings else nan
    df["reference_recall"] = [reference_recall(r, s) for r, s in zip(refs, stories)] if refs else nan
    df["story_ended"] = [story_ended(s) for s in stories]
    return df
