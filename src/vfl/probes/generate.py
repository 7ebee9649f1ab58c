"""Built-in counterfactual pairs: two images that differ in exactly one function-relevant attribute.

Two suites: v1 (count, ground and OCR images hold only the asked-about object(s); recognition is v2's, so both
sides hold as many objects; `make demo`'s probes) and v2
(`vfl.probes.questions`: distractors, binding, two words; nano v2's data, OCR from held-out words).
"""

from __future__ import annotations

import random
from pathlib import Path

from vfl.errors import VflError
from vfl.probes.questions import HELD_OUT, box_text, question_pair
from vfl.probes.render import COLOURS, MAX_COUNT, SHAPES, WORDS, Thing, place_boxes, render_scene, render_word
from vfl.probes.schema import FUNCTIONS, Probe, save_probes

SUITES = ("v1", "v2")


def _thing_size(size: int) -> int:
    return max(4, size // 6)


def make_pair(function: str, index: int, size: int, seed: int, suite: str = "v1"):
    """Return ``(question, image_a, image_b, answer_a, answer_b, box_a, box_b)`` for one pair.

    The RNG is seeded by (suite, function, seed, index) alone, so any pair can be regenerated on its own.
    """
    if function not in FUNCTIONS:
        raise VflError(f"unknown function {function!r}")
    check_suite(suite)
    if suite == "v2":
        pair = question_pair(function, random.Random(f"probe-v2:{function}:{seed}:{index}"), size, HELD_OUT)
        return pair.question, pair.image_a, pair.image_b, pair.answer_a, pair.answer_b, pair.box_a, pair.box_b
    rng = random.Random(f"{function}:{seed}:{index}")
    if function == "recog":  # as suite v2 draws it: B holds a kind sharing A's asked colour or shape in its place,
        # so both images hold as many objects and a model that counts them cannot answer
        pair = question_pair("recog", rng, size)
        return pair.question, pair.image_a, pair.image_b, pair.answer_a, pair.answer_b, None, None
    side = _thing_size(size)
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    box_a = box_b = None
    if function == "count":
        n_a, n_b = rng.sample(range(1, MAX_COUNT + 1), 2)
        boxes = place_boxes(rng, max(n_a, n_b), size, side)
        image_a = render_scene([Thing(shape, colour, b) for b in boxes[:n_a]], size)
        image_b = render_scene([Thing(shape, colour, b) for b in boxes[:n_b]], size)
        question = f"How many {colour} {shape}s are in the image? Answer with a number."
        answer_a, answer_b = str(n_a), str(n_b)
    elif function == "ground":
        while True:
            first, second = place_boxes(rng, 2, size, 2 * side)
            if abs(first[0] - second[0]) + abs(first[1] - second[1]) >= 2 * side:
                break
        box_a, box_b = list(first), list(second)
        image_a = render_scene([Thing(shape, colour, first)], size)
        image_b = render_scene([Thing(shape, colour, second)], size)
        question = f"Where is the {colour} {shape}? Answer with its bounding box."
        answer_a, answer_b = box_text(box_a), box_text(box_b)
    elif function == "ocr":
        word_a, word_b = rng.sample(WORDS, 2)
        image_a, image_b = render_word(word_a, size), render_word(word_b, size)
        question = "What word is written in the image?"
        answer_a, answer_b = word_a, word_b
    return question, image_a, image_b, answer_a, answer_b, box_a, box_b


def check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise VflError(f"--suite must be one of {', '.join(SUITES)}, got {suite!r}")


def check_probe_options(n: int, size: int, suite: str = "v1") -> None:
    """Refuse a pair count, image size or suite the generator cannot draw (before anything is written)."""
    check_suite(suite)
    if n < 1:
        raise VflError(f"--n must be at least 1, got {n}")
    least = 32 if suite == "v2" else 24  # v2's grounding scatters up to five objects of free sizes
    if size < least:
        raise VflError(f"--size must be at least {least} pixels{' for suite v2' if suite == 'v2' else ''}, got {size}")


def make_probes(function: str, n: int, size: int, seed: int, out: Path, suite: str = "v1") -> list[Probe]:
    """Write ``n`` pairs of ``function`` as ``out/probes.jsonl`` + ``out/images/`` and return them."""
    check_probe_options(n, size, suite)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    probes = []
    for index in range(n):
        question, image_a, image_b, answer_a, answer_b, box_a, box_b = make_pair(function, index, size, seed, suite)
        pid = f"{function}-{seed}-{index:04d}" if suite == "v1" else f"{function}-{suite}-{seed}-{index:04d}"
        names = [f"images/{pid}_{which}.png" for which in "ab"]
        image_a.save(out / names[0])
        image_b.save(out / names[1])
        probes.append(Probe(pid, function, question, names[0], names[1], answer_a, answer_b, box_a, box_b, root=out))
    return probes


def make_probe_set(functions: list[str], n: int, size: int, seed: int, out: Path, suite: str = "v1") -> Path:
    """All functions' pairs in one ``out/probes.jsonl``; returns its path."""
    probes = [p for f in functions for p in make_probes(f, n, size, seed, out, suite)]
    save_probes(probes, Path(out) / "probes.jsonl")
    return Path(out) / "probes.jsonl"
