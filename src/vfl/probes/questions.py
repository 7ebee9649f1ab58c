"""Question-dependent scene pairs (suite v2): every answer depends on the question, not on the image alone.

In suite v1 an image held only the asked-about object(s), so a model could answer count, ground and OCR
questions without reading the question. Here: count one kind among distractors of other kinds; ground one
object among distractors; recognise a kind among distractors that share its colour or its shape (binding;
where the kind is absent, one more such distractor takes its place, so the number of objects does not
answer); read one of two words, picked by ink or by place, from a vocabulary of 355 words whose every tenth
word is held out of training. A pair's two scenes differ only in the attribute the question asks about, so
the same pair is a probe (`vfl.probes.generate`) and, one side of it, a training sample (`vfl.nano.suite_v2`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from vfl.probes.render import (COLOURS, MAX_COUNT, SHAPES, Glyph, Thing, place_boxes, render_scene, render_text,
                               scatter_boxes, text_glyphs)

VOCABULARY = (
    "able", "acid", "aged", "also", "area", "army", "atom", "aunt", "baby", "back", "bake", "ball", "band",
    "bank", "barn", "base", "bath", "bead", "beam", "bean", "bear", "beef", "bell", "belt", "bench", "berry",
    "bike", "bill", "bird", "blade", "blank", "block", "blood", "board", "boat", "body", "bone", "book", "boot",
    "bowl", "brain", "brick", "bridge", "brush", "bucket", "cable", "cake", "calm", "camel", "camp", "candle",
    "canoe", "card", "carpet", "cart", "castle", "cave", "chain", "chalk", "cheese", "chess", "chest", "chief",
    "child", "chin", "city", "clay", "clock", "cloth", "coal", "coast", "coat", "coin", "comb", "cook",
    "copper", "cord", "corn", "cotton", "couch", "cow", "crab", "crane", "cream", "crown", "cube", "cup",
    "curtain", "dart", "desk", "dial", "dish", "dog", "doll", "dome", "donkey", "dove", "drum", "duck", "dust",
    "eagle", "edge", "egg", "elbow", "engine", "fabric", "face", "farm", "feast", "fence", "fern", "film",
    "finger", "fire", "flag", "flour", "flute", "foam", "fog", "fork", "fox", "frame", "frog", "fruit", "game",
    "garden", "gate", "gem", "ghost", "gift", "glove", "glue", "goat", "grain", "grass", "guitar", "hammer",
    "hand", "harp", "hat", "hawk", "hay", "helmet", "herb", "hive", "honey", "hook", "horn", "horse", "hose",
    "hotel", "iron", "island", "ivory", "jacket", "jam", "jar", "jelly", "jewel", "kettle", "key", "kite",
    "kitten", "ladder", "lake", "leaf", "leg", "lid", "lily", "lion", "lock", "log", "magnet", "maple", "map",
    "marble", "mask", "meal", "melon", "metal", "milk", "mill", "mint", "mirror", "mouse", "mouth", "mud",
    "nail", "needle", "nest", "net", "nut", "oak", "oar", "olive", "onion", "orange", "otter", "oven", "owl",
    "paint", "palm", "pan", "panda", "park", "parrot", "path", "peach", "pear", "pearl", "pen", "pencil",
    "pepper", "piano", "pig", "pillow", "pine", "pipe", "pizza", "plate", "plum", "pocket", "pond", "pony",
    "pot", "potato", "pump", "puppy", "purse", "rabbit", "rake", "ribbon", "rice", "ring", "robot", "rock",
    "roof", "room", "rope", "rose", "ruby", "sail", "salt", "saw", "scarf", "seed", "sheep", "shell", "shirt",
    "shoe", "silk", "silver", "sink", "skate", "skirt", "sled", "slide", "soap", "sock", "sofa", "soup",
    "spoon", "square", "squid", "stamp", "steam", "stick", "stool", "straw", "sugar", "suit", "swan", "sword",
    "tail", "tank", "tent", "thread", "thumb", "tiger", "toast", "toe", "tomato", "tool", "tooth", "towel",
    "tower", "toy", "truck", "tulip", "tunnel", "turtle", "valley", "vase", "violin", "wagon", "wall", "wand",
    "watch", "wave", "wheat", "wheel", "whale", "wing", "wire", "wood", "wool", "yard", "yarn", "yolk",
    "zipper", "bamboo", "basket", "beach", "bottle", "button", "canyon", "carrot", "cherry", "circus", "cloud",
    "coffee", "collar", "cookie", "crayon", "desert", "dragon", "feather", "forest", "harbor", "jungle",
    "lantern", "lemon", "meadow", "monkey", "noodle", "oyster", "pebble", "planet", "pretzel", "puzzle",
    "rocket", "saddle", "salad", "shadow", "spider", "summer", "sunset", "teapot", "ticket", "tractor",
    "unicorn", "velvet", "walnut", "window", "winter",
)
HELD_OUT = VOCABULARY[::10]
TRAIN_WORDS = tuple(w for w in VOCABULARY if w not in set(HELD_OUT))
INKS = {"red": (200, 30, 30), "blue": (30, 60, 200), "green": (30, 140, 50), "black": (20, 20, 20)}


@dataclass
class ScenePair:
    """Two images that differ only in what ``question`` asks about; boxes (pixels) for grounding, and the
    drawn objects (`Thing`s) of each side where the images are scenes, or its letters (`Glyph`s) where they are
    text."""

    function: str
    question: str
    image_a: Image.Image
    image_b: Image.Image
    answer_a: str
    answer_b: str
    box_a: list[int] | None = None
    box_b: list[int] | None = None
    scene_a: list[Thing] | list[Glyph] | None = None
    scene_b: list[Thing] | list[Glyph] | None = None


def box_text(box: list[int]) -> str:
    return "[" + ", ".join(str(v) for v in box) + "]"


def asked_kind(question: str) -> tuple[str, str]:
    """(shape, colour) that a counting, grounding or recognition question names: its template read back."""
    words = question.replace("?", "").split()
    colour = next(w for w in words if w in COLOURS)
    return words[words.index(colour) + 1].rstrip("s"), colour


def _article(colour: str) -> str:
    return "an" if colour[0] in "aeiou" else "a"


def _other_kinds(rng: random.Random, shape: str, colour: str, count: int) -> list[tuple[str, str]]:
    """``count`` kinds that differ from (shape, colour) in colour, shape or both."""
    kinds = [(s, c) for s in SHAPES for c in COLOURS if (s, c) != (shape, colour)]
    return [rng.choice(kinds) for _ in range(count)]


def question_pair(function: str, rng: random.Random, size: int = 224, words: tuple[str, ...] = TRAIN_WORDS,
                  counts: tuple[int, int] = (1, MAX_COUNT), binding: bool = True, crowd: int = 0) -> ScenePair:
    """One pair drawn from ``rng``: count (two counts from ``counts`` of the asked kind, same distractors),
    ground (the asked object in two places, same distractors), recog (the asked kind, then in its place
    a kind that shares its colour or its shape, among binding distractors; ``binding`` False: any other kinds,
    in its place too, an easier lesson; ``crowd`` more distractors, a scene nano was not trained on), ocr (the
    asked word changed; the other word, inks and places kept)."""
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    side = max(4, size // 7)
    if function == "count":
        n_a, n_b = rng.sample(range(counts[0], counts[1] + 1), 2)
        others = _other_kinds(rng, shape, colour, rng.randint(1, 4))
        boxes = place_boxes(rng, max(n_a, n_b) + len(others), size, side)
        distractors = [Thing(s, c, b) for (s, c), b in zip(others, boxes[len(boxes) - len(others):])]
        scene_a = [Thing(shape, colour, b) for b in boxes[:n_a]] + distractors
        scene_b = [Thing(shape, colour, b) for b in boxes[:n_b]] + distractors
        return ScenePair(function, f"How many {colour} {shape}s are in the image? Answer with a number.",
                         render_scene(scene_a, size), render_scene(scene_b, size), str(n_a), str(n_b),
                         scene_a=scene_a, scene_b=scene_b)
    if function == "ground":
        others = _other_kinds(rng, shape, colour, rng.randint(1, 3))
        # Free places and sizes (v1's range and below), the asked object the same size in A and B; disjoint
        # boxes, so no answer box can overlap both A's and B's by IoU > 0.5.
        extent = rng.randint(round(1.25 * side), round(2.8 * side))
        sides = [extent, extent] + [rng.randint(side, round(2 * side)) for _ in others]
        boxes = scatter_boxes(rng, sides, size, gap=max(1, size // 56))
        distractors = [Thing(s, c, b) for (s, c), b in zip(others, boxes[2:])]
        scene_a, scene_b = [Thing(shape, colour, boxes[0])] + distractors, [Thing(shape, colour, boxes[1])] + distractors
        return ScenePair(function, f"Where is the {colour} {shape}? Answer with its bounding box.",
                         render_scene(scene_a, size), render_scene(scene_b, size), box_text(list(boxes[0])),
                         box_text(list(boxes[1])), list(boxes[0]), list(boxes[1]), scene_a, scene_b)
    if function == "recog":
        # Binding: one distractor shares the colour, one the shape, so neither alone answers the question.
        # B puts a kind that shares the asked kind's colour or its shape where A has the asked kind: both scenes
        # hold as many objects, so the number of objects cannot answer (when B lacked the object, a model
        # counted: 2 objects meant "no" and 5 "yes").
        def same_colour():
            return rng.choice([s for s in SHAPES if s != shape]), colour

        def same_shape():
            return shape, rng.choice([c for c in COLOURS if c != colour])

        kinds = ([same_colour(), same_shape()] + _other_kinds(rng, shape, colour, rng.randint(0, 2) + crowd) if binding
                 else _other_kinds(rng, shape, colour, rng.randint(2, 4) + crowd))
        boxes = place_boxes(rng, len(kinds) + 1, size, side)
        scene = [Thing(s, c, b) for (s, c), b in zip(kinds, boxes[1:])]
        in_place = rng.choice([same_colour, same_shape])() if binding else _other_kinds(rng, shape, colour, 1)[0]
        scene_a, scene_b = scene + [Thing(shape, colour, boxes[0])], scene + [Thing(*in_place, boxes[0])]
        return ScenePair(function, f"Is there {_article(colour)} {colour} {shape} in the image? Answer yes or no.",
                         render_scene(scene_a, size), render_scene(scene_b, size), "yes", "no",
                         scene_a=scene_a, scene_b=scene_b)
    if function == "ocr":
        word_a, other, word_b = rng.sample(words, 3)
        inks = rng.sample(list(INKS), 2)
        font = int(size // 6 * rng.uniform(0.85, 1.15))
        shift = rng.randint(-size // 12, size // 12)
        places = [(shift, -size // 5), (-shift, size // 5)]
        asked = rng.randrange(2)
        question = (f"What word is written in {inks[asked]}?" if rng.random() < 0.5 else
                    f"What word is at the {('top', 'bottom')[asked]}?")

        def lines(word: str) -> list:
            shown = [word, other] if asked == 0 else [other, word]
            return list(zip(shown, inks, places))

        def draw(word: str) -> Image.Image:
            return render_text([(w, INKS[i], p) for w, i, p in lines(word)], size, font)

        return ScenePair(function, question + " Answer with the word.", draw(word_a), draw(word_b), word_a, word_b,
                         scene_a=text_glyphs(lines(word_a), size, font), scene_b=text_glyphs(lines(word_b), size, font))
    raise ValueError(f"unknown function {function!r}")
