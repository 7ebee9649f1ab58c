"""nano v2's training suite: one side of a question-dependent pair (`vfl.probes.questions`) per sample.

Every sample is seeded by (function, seed, index, split) alone; ``split`` picks the OCR vocabulary: the
training words, the held-out ones (every tenth word, never trained on), or pseudo-words (random strings of
letters, no vocabulary word), which no model can answer from a memorised list: only by reading every letter.
"""

from __future__ import annotations

import random

from vfl.nano.data import Sample, unit_box
from vfl.probes.questions import HELD_OUT, TRAIN_WORDS, VOCABULARY, question_pair
from vfl.probes.render import MAX_COUNT

SPLITS = ("train", "held_out", "pseudo")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def pseudo_words(rng: random.Random, n: int) -> tuple[str, ...]:
    """``n`` distinct random strings of 3-7 letters (the vocabulary's lengths), none of them a vocabulary word."""
    words: list[str] = []
    while len(words) < n:
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 7)))
        if word not in VOCABULARY and word not in words:
            words.append(word)
    return tuple(words)


def ocr_split(index: int, seed: int, pseudo_share: float) -> str:
    """The split of training OCR sample ``index``: pseudo-words for a ``pseudo_share`` of the samples, drawn
    from (seed, index) alone, the training words otherwise."""
    if pseudo_share and random.Random(f"nano-v2-pseudo:{seed}:{index}").random() < pseudo_share:
        return "pseudo"
    return "train"


def make_question_sample(function: str, index: int, seed: int, size: int = 224, split: str = "train",
                         counts: tuple[int, int] = (1, MAX_COUNT)) -> Sample:
    """One sample of the suite: side A or B of a pair, at random (so the asked kind is present half the time,
    and counts and places are uniform)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"nano-v2:{function}:{seed}:{index}:{split}")
    words = {"train": TRAIN_WORDS, "held_out": HELD_OUT}.get(split) or pseudo_words(rng, 3)
    pair = question_pair(function, rng, size, words, counts)
    if rng.random() < 0.5:
        image, answer, box, scene = pair.image_a, pair.answer_a, pair.box_a, pair.scene_a
    else:
        image, answer, box, scene = pair.image_b, pair.answer_b, pair.box_b, pair.scene_b
    if function == "ground":
        answer = unit_box(box, size)
    return Sample(function, image, pair.question, answer, box, scene)
