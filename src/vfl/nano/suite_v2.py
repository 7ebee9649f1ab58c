"""nano v2's training suite: one side of a question-dependent pair (`vfl.probes.questions`) per sample.

Every sample is seeded by (function, seed, index, split) alone; ``split`` picks the OCR vocabulary: the
training words, the held-out ones (every tenth word, never trained on), or pseudo-words (random strings of
letters, no vocabulary word), which no model can answer from a memorised list: only by reading every letter.
Besides the four functions' samples, ``describe`` samples (training only) caption a recognition scene, and
``which`` samples name the shapes of one colour or the colours of one shape in it.
"""

from __future__ import annotations

import random

from vfl.nano.sample import Sample, unit_box
from vfl.probes.questions import HELD_OUT, TRAIN_WORDS, VOCABULARY, asked_kind, question_pair
from vfl.probes.render import MAX_COUNT

SPLITS = ("train", "held_out", "pseudo")
DESCRIBE_QUESTION = "Name every object in the image, row by row."
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def pseudo_words(rng: random.Random, n: int, vocabulary=VOCABULARY) -> tuple[str, ...]:
    """``n`` distinct random strings of 3-7 letters (the vocabulary's lengths), none of them a ``vocabulary`` word."""
    words: list[str] = []
    while len(words) < n:
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 7)))
        if word not in vocabulary and word not in words:
            words.append(word)
    return tuple(words)


def ocr_split(index: int, seed: int, pseudo_share: float) -> str:
    """The split of training OCR sample ``index``: pseudo-words for a ``pseudo_share`` of the samples, drawn
    from (seed, index) alone, the training words otherwise."""
    if pseudo_share and random.Random(f"nano-v2-pseudo:{seed}:{index}").random() < pseudo_share:
        return "pseudo"
    return "train"


def loose_recognition(index: int, seed: int, share: float) -> bool:
    """Whether training recognition sample ``index`` is drawn without binding distractors (a ``share`` of them,
    from (seed, index) alone). Where they bind, no single attribute pays any part of the answer, so a yes/no
    loss has no slope until colour and shape are matched together; loose scenes give that slope."""
    return bool(share) and random.Random(f"nano-v2-loose:{seed}:{index}").random() < share


def make_question_sample(function: str, index: int, seed: int, size: int = 224, split: str = "train",
                         counts: tuple[int, int] = (1, MAX_COUNT), binding: bool = True, crowd: int = 0) -> Sample:
    """One sample of the suite: side A or B of a pair, at random (so the asked kind is present half the time,
    and counts and places are uniform); ``binding`` and ``crowd`` as in `question_pair`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"nano-v2:{function}:{seed}:{index}:{split}")
    if function == "describe":
        return describe_sample(rng, size)
    if function == "which":
        return which_sample(rng, size)
    words = {"train": TRAIN_WORDS, "held_out": HELD_OUT}.get(split) or pseudo_words(rng, 3)
    pair = question_pair(function, rng, size, words, counts, binding, crowd)
    if rng.random() < 0.5:
        image, answer, box, scene = pair.image_a, pair.answer_a, pair.box_a, pair.scene_a
    else:
        image, answer, box, scene = pair.image_b, pair.answer_b, pair.box_b, pair.scene_b
    if function == "ground":
        answer = unit_box(box, size)
    return Sample(function, image, pair.question, answer, box, scene)


def describe_sample(rng: random.Random, size: int = 224) -> Sample:
    """A caption of one side of a recognition pair: every object's colour and shape, row by row, left to right
    ("red circle, red square, blue circle"). A recognition answer pays one bit for binding a colour to a shape;
    this names the pair of every object, so the language model learns which tokens say "red circle"."""
    _, image, scene = recognition_side(rng, size)
    return Sample("describe", image, DESCRIBE_QUESTION, describe_caption(scene), scene=scene)


def recognition_side(rng: random.Random, size: int):
    """A recognition pair and one of its sides, at random: (pair, image, scene)."""
    pair = question_pair("recog", rng, size)
    if rng.random() < 0.5:
        return pair, pair.image_a, pair.scene_a
    return pair, pair.image_b, pair.scene_b


def in_rows(scene) -> list:
    """The objects row by row (top first), left to right: the order captions and lookups name them in."""
    return sorted(scene, key=lambda thing: (thing.box[1], thing.box[0]))


def describe_caption(scene) -> str:
    """The objects' colours and shapes, in rows."""
    return ", ".join(f"{t.colour} {t.shape}" for t in in_rows(scene))


def which_shapes_question(colour: str) -> str:
    return f"Which shapes are {colour}? Name them row by row."


def which_sample(rng: random.Random, size: int = 224) -> Sample:
    """A lookup by content on one side of a recognition pair: the shapes of every object of one colour, or the
    colours of every object of one shape, row by row ("Which shapes are red?" "circle, square"). A caption reads
    the objects in a fixed order; a recognition question must find the tokens that match its words, as here."""
    pair, image, scene = recognition_side(rng, size)
    shape, colour = asked_kind(pair.question)  # the recognition question's kind: one of its halves answers it
    if rng.random() < 0.5:
        question, answer = which_shapes_question(colour), [t.shape for t in in_rows(scene) if t.colour == colour]
    else:
        question = f"What colours are the {shape}s? Name them row by row."
        answer = [t.colour for t in in_rows(scene) if t.shape == shape]
    return Sample("which", image, question, ", ".join(answer), scene=scene)
