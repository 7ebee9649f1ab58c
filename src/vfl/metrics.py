"""From decoded answers to per-layer rates: parsing, matching, Wilson intervals, the VFL band."""

from __future__ import annotations

import math
import re

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalise(text: str) -> str:
    """Lower case, letters and digits only, single spaces."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def parse_count(text: str) -> int | None:
    """The first number in the answer, written in digits or as a word up to twenty."""
    for word in normalise(text).split():
        if word.isdigit():
            return int(word)
        if word in NUMBER_WORDS:
            return NUMBER_WORDS[word]
    return None


def parse_yes_no(text: str) -> str | None:
    for word in normalise(text).split():
        if word in ("yes", "no"):
            return word
    return None


def parse_box(text: str, box_format: str, image_size: tuple[int, int],
              model_size: tuple[int, int] | None = None) -> list[float] | None:
    """The first four numbers of the answer as a pixel box of the image as given, by how the model writes boxes:
    "unit" (fractions 0-1), "thousand" (0-1000) or "pixel" (pixels of the image the model saw: ``model_size``
    where its processor resized it, as Qwen2.5-VL's does, else the image's own)."""
    numbers = [float(n) for n in _NUMBER.findall(text)[:4]]
    if len(numbers) < 4:
        return None
    width, height = image_size
    seen = model_size or image_size
    scale = {"unit": (width, height), "thousand": (width / 1000, height / 1000),
             "pixel": (width / seen[0], height / seen[1])}[box_format]
    x0, y0, x1, y1 = numbers
    return [x0 * scale[0], y0 * scale[1], x1 * scale[0], y1 * scale[1]]


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


_LETTER = re.compile(r"^\(?([a-z])\)?(?:[.:)]|\s|$)")
_ANSWER_IS = re.compile(r"answer(?: is|:)\s*\(?([a-z])\)?(?:[.:)]|\s|$)")


def parse_choice(text: str, choices: list[str] | None = None) -> str | None:
    """The option letter an answer picks, lower case: given the ``choices`` (their texts in letter order), the
    one option whose text the answer is; else a leading letter ("(B)", "B.", "b) red") or "the answer is B",
    among as many letters as there are choices (a-h without them)."""
    said = text.strip().lower()
    if choices:
        named = [k for k, choice in enumerate(choices) if normalise(choice) and normalise(choice) == normalise(said)]
        if len(named) == 1:
            return chr(ord("a") + named[0])
    letters = len(choices) if choices else 8
    for pattern in (_LETTER, _ANSWER_IS):
        found = pattern.search(said)
        if found and ord(found.group(1)) - ord("a") < letters:
            return found.group(1)
    return None


_ARTICLES = {"a", "an", "the"}


def vqa_normalise(text: str) -> str:
    """TextVQA's answer normalisation, in short: lower case, punctuation out, number words as digits, no
    articles."""
    words = normalise(text.replace("'", "")).split()
    return " ".join(str(NUMBER_WORDS[w]) if w in NUMBER_WORDS else w for w in words if w not in _ARTICLES)


def vqa_accuracy(answer: str, accepted: list[str]) -> float:
    """TextVQA's soft accuracy: min(annotators who gave the answer / 3, 1)."""
    said = vqa_normalise(answer)
    return min(sum(vqa_normalise(a) == said for a in accepted) / 3, 1.0) if said else 0.0


def contains(answer: str, accepted: list[str]) -> bool:
    """OCRBench's test: some accepted answer, lower-cased and stripped, occurs in the lower-cased answer."""
    said = " ".join(answer.lower().split())
    return any(a.lower().strip() and " ".join(a.lower().split()) in said for a in accepted)


SCORERS = ("number", "yes-no", "box-iou", "exact", "choice", "vqa-soft", "contains")
SCORER_OF = {"count": "number", "recog": "yes-no", "ground": "box-iou", "ocr": "exact"}  # a function's default


def score(scorer: str, answer: str, target: str, box: list[float] | None = None, *, other: str | None = None,
          accepted: list[str] | None = None, choices: list[str] | None = None, box_format: str = "unit",
          image_size: tuple[int, int] = (1, 1), model_size: tuple[int, int] | None = None) -> float:
    """How well ``answer`` gives ``target``, in [0, 1]. number: the same number; yes-no: the same yes/no;
    box-iou: IoU >= 0.5 with ``box``; exact: the normalised answer is the word, or holds it as a word and not
    ``other``; choice: the option letter ``target`` names ("(B)", "b"); vqa-soft: TextVQA's soft accuracy
    against the ``accepted`` answers; contains: OCRBench's containment of one of ``accepted`` (else ``target``)."""
    if scorer == "number":
        return float(parse_count(answer) is not None and parse_count(answer) == parse_count(target))
    if scorer == "yes-no":
        return float(parse_yes_no(answer) is not None and parse_yes_no(answer) == parse_yes_no(target))
    if scorer == "box-iou":
        parsed = parse_box(answer, box_format, image_size, model_size)
        return float(parsed is not None and box is not None and iou(parsed, box) >= 0.5)
    if scorer == "exact":
        said, word = normalise(answer), normalise(target)
        if not word:
            return 0.0
        words = f" {said} "
        return float(said == word or (f" {word} " in words and (other is None or f" {normalise(other)} " not in words)))
    if scorer == "choice":
        picked = parse_choice(answer, choices)
        return float(picked is not None and picked == parse_choice(target))
    if scorer == "vqa-soft":
        return vqa_accuracy(answer, accepted or [target])
    if scorer == "contains":
        return float(contains(answer, accepted or [target]))
    raise ValueError(f"unknown scorer {scorer!r}; choose from {', '.join(SCORERS)}")


def yes_no_stats(said: list[str], truth: list[str]) -> dict:
    """POPE's numbers for yes/no answers: accuracy, precision, recall and F1 of "yes", and the share of yes."""
    picked = [parse_yes_no(s) for s in said]
    true_yes = sum(p == "yes" and parse_yes_no(t) == "yes" for p, t in zip(picked, truth))
    yes, positives = picked.count("yes"), sum(parse_yes_no(t) == "yes" for t in truth)
    precision, recall = (true_yes / yes if yes else 0.0), (true_yes / positives if positives else 0.0)
    return {"accuracy": sum(p == parse_yes_no(t) for p, t in zip(picked, truth)) / max(1, len(truth)),
            "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "yes_ratio": yes / max(1, len(said))}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate (well-behaved at 0, 1 and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_p_value(gains: int, losses: int) -> float:
    """One-sided exact McNemar test on paired outcomes: the probability, if an intervention did nothing, of
    at least ``gains`` probes flipping to B's answer among the ``gains + losses`` probes whose outcome
    differs from the control's (binomial, p = 1/2). Probes that agree with the control carry no evidence."""
    n = gains + losses
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, k) for k in range(gains, n + 1)) / 2 ** n)


def difference_interval(right_a: int, n_a: int, right_b: int, n_b: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of rate a minus rate b from independent samples: Newcombe's hybrid score interval (1998,
    method 10), the two Wilson intervals combined. On items both were scored on it is conservative (their
    positive correlation narrows the true interval): `paired_difference_interval` uses it where outcomes pair."""
    return _hybrid_score(right_a, n_a, right_b, n_b, 0.0, z)


def paired_difference_interval(both: int, gains: int, losses: int, neither: int,
                               z: float = 1.96) -> tuple[float, float]:
    """95% interval of the difference of two rates measured on the same items (first right minus second right):
    Newcombe's hybrid score interval for paired data (1998), the two Wilson intervals combined with the pairs'
    correlation. ``gains``: items only the first gets right; ``losses``: only the second; ``both``, ``neither``."""
    n = both + gains + losses + neither
    spread = (both + gains) * (losses + neither) * (both + losses) * (gains + neither)
    phi = (both * neither - gains * losses) / math.sqrt(spread) if spread else 0.0
    return _hybrid_score(both + gains, n, both + losses, n, phi, z)


def _hybrid_score(right_a: int, n_a: int, right_b: int, n_b: int, phi: float, z: float) -> tuple[float, float]:
    if n_a == 0 or n_b == 0:
        return (-1.0, 1.0)
    p1, p2 = right_a / n_a, right_b / n_b
    (l1, u1), (l2, u2) = wilson(right_a, n_a, z), wilson(right_b, n_b, z)
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return (max(-1.0, p1 - p2 - below), min(1.0, p1 - p2 + above))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (the family-wise error stays at the level they are compared with)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def vfl_band(rates: list[float], passing: list[bool], max_windows: int = 3) -> tuple[int | None, list[int]]:
    """The peak (highest-rate passing window, earliest on ties) and the contiguous band of passing windows
    around it, at most ``max_windows``, grown towards the higher neighbour first; (None, []) if none passes."""
    candidates = [k for k in range(len(rates)) if passing[k]]
    if not candidates:
        return None, []
    peak = max(candidates, key=lambda k: (rates[k], -k))
    band = [peak]
    while len(band) < max_windows:
        left, right = band[0] - 1, band[-1] + 1
        neighbours = [k for k in (left, right) if 0 <= k < len(rates) and passing[k]]
        if not neighbours:
            break
        band = sorted(band + [max(neighbours, key=lambda k: (rates[k], -k))])
    return peak, band
