"""nano v2's training suite: one side of a question-dependent pair (`vfl.probes.questions`) per sample.

Every sample is seeded by (function, seed, index, split) alone; ``split`` picks the OCR vocabulary, the
training words or the held-out ones (every tenth word, never trained on).
"""

from __future__ import annotations

import random

from vfl.nano.data import Sample, unit_box
from vfl.probes.questions import HELD_OUT, TRAIN_WORDS, question_pair
from vfl.probes.render import MAX_COUNT

SPLITS = ("train", "held_out")


def make_question_sample(function: str, index: int, seed: int, size: int = 224, split: str = "train",
                         counts: tuple[int, int] = (1, MAX_COUNT)) -> Sample:
    """One sample of the suite: side A or B of a pair, at random (so the asked kind is present half the time,
    and counts and places are uniform)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"nano-v2:{function}:{seed}:{index}:{split}")
    pair = question_pair(function, rng, size, TRAIN_WORDS if split == "train" else HELD_OUT, counts)
    if rng.random() < 0.5:
        image, answer, box, scene = pair.image_a, pair.answer_a, pair.box_a, pair.scene_a
    else:
        image, answer, box, scene = pair.image_b, pair.answer_b, pair.box_b, pair.scene_b
    if function == "ground":
        answer = unit_box(box, size)
    return Sample(function, image, pair.question, answer, box, scene)
