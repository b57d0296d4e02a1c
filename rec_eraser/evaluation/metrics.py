"""Evaluation metrics: LLaRA generation (HitRatio@1, ValidRatio), candidate ranking, TALLRec AUC.

All functions are pure and numpy-based; their dicts use RecBole-style lowercase keys (``hit@1``,
``ndcg@10``, ``valid_ratio``, ``auc``) so they go straight into ``evaluate``'s JSON.

Generation (LLaRA). A greedy answer is matched to one of the prompt's candidate titles by
:func:`match_answer` (the rule is defined there). :func:`generation_metrics` reports
``hit@1`` = hits / **all** prompts (an invalid answer counts as a miss) — the figure to quote —
and, labelled, LLaRA's own ``hit@1_over_valid`` = hits / valid answers, which rewards a model
for answering invalidly when unsure (docs/design.md, "Data and metric definitions").

Ranking. :func:`ranking_metrics` ranks every candidate by a score (higher = better, e.g. the
log-likelihood of its title as the response). One tie rule serves every ranking figure of the
project (the model's likelihoods, the popularity and item-encoder baselines, SASRec's ranking
of the whole catalogue): a target tied with other candidates gets the **expectation over a
uniformly random order** of the tied candidates. Breaking ties in the target's favour would
reward degenerate scores, breaking them against it would understate a baseline whose scores
tie often (popularity counts); the expectation does neither, and constant scores earn exactly
the random baseline.

Classification (TALLRec). :func:`auc` is the area under the ROC curve by the rank-sum
(Mann–Whitney) formula with ties counted half.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: The cut-offs of :func:`ranking_metrics` (``hit@k`` for each, ``ndcg@k`` for those ≥ 5).
HIT_KS = (1, 5, 10)
NDCG_KS = (5, 10)

# Typographic quotes and apostrophes read as their ASCII forms ("Schindler’s List").
_QUOTES = str.maketrans(
    {"‘": "'", "’": "'", "‚": "'", "‛": "'", "“": '"', "”": '"', "„": '"', "‟": '"', "«": '"', "»": '"', "`": "'"}
)
#: Characters stripped from both ends of an answer or a title: whitespace, quotes, sentence
#: punctuation and Markdown emphasis.
EDGE_CHARS = " \t\n\r\f\v\"'.,;:!?*_"
_SPACE = re.compile(r"\s+")


# --------------------------------------------------------------------------------------------
# Generation: matching answers to candidate titles
# --------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """The normal form used to compare answers with titles.

    Unicode NFKC, typographic quotes to ASCII, casefold, whitespace runs collapsed to one
    space, then whitespace, quotes (``"`` ``'``), ``. , ; : ! ?`` and Markdown ``* _`` stripped
    from both ends (so a trailing period or surrounding quotes never matter). Inner
    punctuation is kept: ``"L.A. Confidential"`` → ``"l.a. confidential"``.
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    return _SPACE.sub(" ", text).strip(EDGE_CHARS)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _occurrences(title: str, answer: str) -> list[tuple[int, int]]:
    """Spans of ``title`` in ``answer`` that are whole words at the title's alphanumeric edges."""
    spans, start = [], answer.find(title)
    while start >= 0:
        end = start + len(title)
        left_ok = start == 0 or not (title[0].isalnum() and answer[start - 1].isalnum())
        right_ok = end == len(answer) or not (title[-1].isalnum() and answer[end].isalnum())
        if left_ok and right_ok:
            spans.append((start, end))
        start = answer.find(title, start + 1)
    return spans


def match_answer(text: str, candidate_titles: Sequence[str]) -> int | None:
    """The index of the candidate a generated answer names, or None if the answer is invalid.

    The rule (both sides compared in :func:`normalize`'s form):

    1. Only the first non-empty line of ``text`` is read (greedy generation often runs on
       into a new prompt; LLaRA's evaluation also keeps the first line).
    2. Exact match: if the normalised answer equals the normalised title of exactly one
       candidate, that candidate; if it equals several (duplicate titles), None.
    3. Containment: otherwise a candidate is *named* when its normalised title occurs in the
       answer as whole words (no letter or digit glued to either end, so "Up" is not found in
       "update", nor "Alien" in "Aliens") at a position that is not inside an occurrence of
       a longer candidate title. So when one title contains another ("Alien" / "Alien 3"),
       the longest one found wins, but an answer naming both separately is ambiguous.
       The answer is valid iff exactly one candidate is named.
    4. Otherwise (nothing named, several named, empty answer) None.

    Candidates whose normalised title is empty are never named.
    """
    answer = normalize(_first_line(text))
    if not answer:
        return None
    titles = [normalize(t) for t in candidate_titles]
    exact = [i for i, t in enumerate(titles) if t == answer]
    if exact:
        return exact[0] if len(exact) == 1 else None
    spans = {i: _occurrences(t, answer) for i, t in enumerate(titles) if t}
    spans = {i: s for i, s in spans.items() if s}
    named = set()
    for i, own in spans.items():
        longer = [(a, b) for j, other in spans.items() if len(titles[j]) > len(titles[i]) for a, b in other]
        if any(not any(a <= s and e <= b for a, b in longer) for s, e in own):
            named.add(i)
    return named.pop() if len(named) == 1 else None


def match_answers(answers: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[int | None]:
    """:func:`match_answer` for each answer with its own candidate titles."""
    if len(answers) != len(candidates):
        raise ValueError(f"{len(answers)} answers but {len(candidates)} candidate lists")
    return [match_answer(a, c) for a, c in zip(answers, candidates)]


def generation_metrics(
    answers: Sequence[str], candidates: Sequence[Sequence[str]], targets: Sequence[int]
) -> dict[str, Any]:
    """HitRatio@1 and ValidRatio of generated answers (LLaRA).

    Args:
        answers: the generated text of each prompt.
        candidates: the candidate titles of each prompt, in prompt order.
        targets: the index of the target in each prompt's candidate list.

    Returns:
        ``hit@1``: prompts whose answer matches the target / all prompts (invalid = miss);
        ``valid_ratio``: valid answers / all prompts; ``hit@1_over_valid``: hits / valid
        answers (LLaRA's own definition), None when no answer is valid; ``n``: prompts.
    """
    n = len(answers)
    if not n:
        raise ValueError("no prompts to evaluate")
    if len(targets) != n:
        raise ValueError(f"{n} answers but {len(targets)} targets")
    matched = match_answers(answers, candidates)
    for k, (t, c) in enumerate(zip(targets, candidates)):
        if not 0 <= int(t) < len(c):
            raise ValueError(f"prompt {k}: target index {t} outside its {len(c)} candidates")
    valid = sum(m is not None for m in matched)
    hits = sum(m is not None and m == int(t) for m, t in zip(matched, targets))
    return {"hit@1": hits / n, "valid_ratio": valid / n, "hit@1_over_valid": hits / valid if valid else None, "n": n}


# --------------------------------------------------------------------------------------------
# Ranking: scored candidates
# --------------------------------------------------------------------------------------------


def _check_ranking(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, targets = np.asarray(scores, dtype=float), np.asarray(targets)
    if scores.ndim != 2 or targets.ndim != 1 or len(scores) != len(targets):
        raise ValueError(f"scores must be [n, c] and targets [n]; got {scores.shape} and {targets.shape}")
    if not len(targets):
        raise ValueError("no prompts to evaluate")
    if not np.issubdtype(targets.dtype, np.integer) or targets.min() < 0 or targets.max() >= scores.shape[1]:
        raise ValueError(f"targets must be integer indices into {scores.shape[1]} candidates")
    return np.where(np.isnan(scores), -np.inf, scores), targets


def rank_bounds(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best and worst 1-based rank of each target among its candidates.

    ``best`` = 1 + candidates scored strictly higher; ``worst`` = candidates scored higher or
    equal (the target included). They differ only where other candidates tie with the target.
    """
    scores, targets = _check_ranking(scores, targets)
    own = scores[np.arange(len(targets)), targets][:, None]
    return 1 + (scores > own).sum(1), (scores >= own).sum(1)


def expected_hit_rate(best: np.ndarray, worst: np.ndarray, k: int) -> float:
    """Mean over targets of P(rank ≤ k) when the rank is uniform on ``best..worst`` (the tie rule).

    Closed form, so it also serves rankings of a whole catalogue (thousands of tied ranks).
    """
    best, worst = np.asarray(best, dtype=float), np.asarray(worst, dtype=float)
    return float(np.mean(np.clip(np.minimum(k, worst) - best + 1, 0, None) / (worst - best + 1)))


def _expected(best: np.ndarray, worst: np.ndarray, gain: Callable[[np.ndarray], np.ndarray]) -> float:
    """Mean over prompts of the average of ``gain(r)`` over ranks ``best..worst`` (uniform tie order)."""
    return float(np.mean([np.mean(gain(np.arange(b, w + 1))) for b, w in zip(best, worst)]))


def ranking_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """HitRatio@k, NDCG@k and MRR of the target among scored candidates (ties: see the module).

    Args:
        scores: ``[n, c]``, higher = better (e.g. the log-likelihood of each candidate);
            ``-inf`` is allowed (it ranks last); NaN (a diverged model) counts as ``-inf``.
        targets: ``[n]`` integer index of the target in each row.

    Returns:
        ``hit@1``, ``hit@5``, ``hit@10``: share of prompts whose target ranks ≤ k (1 for every
        prompt when c ≤ k); ``ndcg@5``, ``ndcg@10``: mean of 1/log2(rank + 1) if rank ≤ k
        else 0 (one relevant item, so the ideal DCG is 1); ``mrr``: mean of 1/rank (no
        cut-off); ``n``: prompts. Each is the expectation over a uniformly random order of
        the candidates tied with the target.
    """
    best, worst = rank_bounds(scores, targets)
    out: dict[str, Any] = {}
    for k in HIT_KS:
        out[f"hit@{k}"] = expected_hit_rate(best, worst, k)
    for k in NDCG_KS:
        out[f"ndcg@{k}"] = _expected(best, worst, lambda r, k=k: np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0))
    out["mrr"] = _expected(best, worst, lambda r: 1.0 / r)
    out["n"] = len(best)
    return out


# --------------------------------------------------------------------------------------------
# Classification: TALLRec
# --------------------------------------------------------------------------------------------


def _check_classification(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must be 1-d of one length; got {scores.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return scores, labels.astype(int)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann–Whitney) formula, ties counted half.

    AUC = (R₊ − P(P+1)/2) / (P·N), with R₊ the sum of the positives' mid-ranks among all
    scores (ascending), P positives and N negatives: the share of (positive, negative) pairs
    the scores order correctly, a tie counting half. NaN when either class is absent or any
    score is NaN (e.g. a diverged model: its AUC is undefined, not an error).

    Args:
        scores: ``[n]``, higher = more likely positive (TALLRec: log P("Yes") − log P("No")).
        labels: ``[n]`` of 0 / 1.
    """
    scores, labels = _check_classification(scores, labels)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0 or np.isnan(scores).any():
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    midrank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mid-rank of each distinct score
    rank_sum = midrank[inverse][labels == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """``auc`` (None where :func:`auc` is NaN, so the dict stays valid JSON), ``n`` and ``positives``."""
    value = auc(scores, labels)
    labels = np.asarray(labels)
    return {"auc": None if np.isnan(value) else value, "n": int(labels.size), "positives": int(labels.sum())}
