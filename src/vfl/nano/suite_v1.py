"""`nano`'s suite v1, the shipped nano's multi-task instruction data, drawn with the probes' renderer.

Every sample is seeded by (function, seed, index): training and evaluation use different seeds.
The questions are the probes' questions; the scenes vary more than the probes' (object sizes, word
size, place and ink), so a model that passes has learnt to read, not memorised 60 word images.
Recognition is drawn as suite v2 draws it (`vfl.probes.questions.question_pair`): where the asked kind is
absent, a kind sharing its colour or shape stands in its place, so the number of objects never answers.
"""

from __future__ import annotations

import random

from vfl.nano.sample import Sample, unit_box
from vfl.nano.suite_v2 import pseudo_words
from vfl.probes.questions import question_pair
from vfl.probes.render import (COLOURS, MAX_COUNT, SHAPES, WORDS, Thing, place_boxes, render_scene, render_word,
                               word_ink)

V1_SPLITS = ("train", "pseudo")  # v1 has one vocabulary: its words, or pseudo-words in their place


def make_sample(function: str, index: int, seed: int, size: int = 224, counts: tuple[int, int] = (1, MAX_COUNT),
                words: tuple[str, ...] = WORDS, split: str = "train") -> Sample:
    """One sample; ``counts`` bounds the number of objects of a counting sample, ``words`` an OCR sample's
    vocabulary (another one: a reading skill nano was not trained on, in the style it reads); ``split="pseudo"``
    writes a random string of 3-7 letters instead, no vocabulary word (as suite v2's pseudo-words)."""
    if split not in V1_SPLITS:
        raise ValueError(f"suite v1's split must be one of {V1_SPLITS}, got {split!r}")
    rng = random.Random(f"nano:{function}:{seed}:{index}")
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    side = max(4, size // 6)
    if function == "recog":  # as suite v2 draws it: the same number of objects whether the kind is there or not
        pair = question_pair("recog", rng, size)
        present = rng.random() < 0.5
        return Sample(function, pair.image_a if present else pair.image_b, pair.question, "yes" if present else "no",
                      scene=pair.scene_a if present else pair.scene_b)
    if function == "count":
        n = rng.randint(*counts)
        things = [Thing(shape, colour, b) for b in place_boxes(rng, n, size, side)]
        return Sample(function, render_scene(things, size),
                      f"How many {colour} {shape}s are in the image? Answer with a number.", str(n), scene=things)
    if function == "ground":
        extent = int(2 * side * rng.uniform(0.8, 1.2))
        x0, y0 = rng.randint(0, size - extent), rng.randint(0, size - extent)
        box = [x0, y0, x0 + extent, y0 + extent]
        things = [Thing(shape, colour, tuple(box))]
        return Sample(function, render_scene(things, size),
                      f"Where is the {colour} {shape}? Answer with its bounding box.", unit_box(box, size), box, things)
    if function == "ocr":
        word = rng.choice(words) if split == "train" else pseudo_words(rng, 1, words)[0]
        font = int(size // 5 * rng.uniform(0.8, 1.2))
        offset = (rng.randint(-size // 10, size // 10), rng.randint(-size // 8, size // 8))
        ink = tuple(rng.randint(0, 80) for _ in range(3))
        return Sample(function, render_word(word, size, font, offset, ink), "What word is written in the image?", word,
                      scene=[word_ink(word, size, font, offset)])
    raise ValueError(f"unknown function {function!r}")
