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


def parse_box(text: str, box_format: str, image_size: tuple[int, int]) -> list[float] | None:
    """The first four numbers of the answer as a pixel box, given how the model writes boxes:
    "unit" (fractions 0-1), "thousand" (0-1000) or "pixel"."""
    numbers = [float(n) for n in _NUMBER.findall(text)[:4]]
    if len(numbers) < 4:
        return None
    width, height = image_size
    scale = {"unit": (width, height), "thousand": (width / 1000, height / 1000), "pixel": (1, 1)}[box_format]
    x0, y0, x1, y1 = numbers
    return [x0 * scale[0], y0 * scale[1], x1 * scale[0], y1 * scale[1]]


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matches(function: str, answer: str, target: str, box: list[float] | None = None, *,
            other: str | None = None, box_format: str = "unit", image_size: tuple[int, int] = (1, 1)) -> bool:
    """Does ``answer`` give ``target``? count: same number; recog: same yes/no; ground: IoU > 0.5 with
    ``box``; ocr: the normalised answer equals the word, or contains it as a word and not ``other``."""
    if function == "count":
        return parse_count(answer) is not None and parse_count(answer) == parse_count(target)
    if function == "recog":
        return parse_yes_no(answer) is not None and parse_yes_no(answer) == parse_yes_no(target)
    if function == "ground":
        parsed = parse_box(answer, box_format, image_size)
        return parsed is not None and box is not None and iou(parsed, box) > 0.5
    if function == "ocr":
        said, word = normalise(answer), normalise(target)
        if not word:
            return False
        if said == word:
            return True
        words = f" {said} "
        return f" {word} " in words and (other is None or f" {normalise(other)} " not in words)
    raise ValueError(f"unknown function {function!r}")


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
