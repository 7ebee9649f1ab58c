"""nano v2's training suite: every answer depends on the question, not on the image alone.

nano v1's images held only the asked-about object(s), so a model could answer count, ground and OCR
questions without reading the question, and recognition, the one question-dependent task, stalled. Here:
count one kind among distractors of other kinds; ground one object among distractors; recognise a kind
among distractors that share its colour or its shape (binding); read one of two words, picked by ink or by
place, from a vocabulary of 355 words whose every tenth word is held out of training (``split``).
Every sample is seeded by (function, seed, index, split) alone.
"""

from __future__ import annotations

import random

from vfl.nano.data import Sample, unit_box
from vfl.probes.generate import MAX_COUNT
from vfl.probes.render import COLOURS, SHAPES, Thing, place_boxes, render_scene, render_text

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
SPLITS = ("train", "held_out")


def _article(colour: str) -> str:
    return "an" if colour[0] in "aeiou" else "a"


def _other_kinds(rng: random.Random, shape: str, colour: str, count: int) -> list[tuple[str, str]]:
    """``count`` kinds that differ from (shape, colour) in colour, shape or both."""
    kinds = [(s, c) for s in SHAPES for c in COLOURS if (s, c) != (shape, colour)]
    return [rng.choice(kinds) for _ in range(count)]


def make_question_sample(function: str, index: int, seed: int, size: int = 224, split: str = "train",
                         counts: tuple[int, int] = (1, MAX_COUNT)) -> Sample:
    """One sample of the suite; ``split`` picks the OCR vocabulary (training words or held-out ones)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"nano-v2:{function}:{seed}:{index}:{split}")
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    side = max(4, size // 7)
    if function == "count":
        n = rng.randint(*counts)
        others = _other_kinds(rng, shape, colour, rng.randint(1, 4))
        boxes = place_boxes(rng, n + len(others), size, side)
        things = [Thing(shape, colour, b) for b in boxes[:n]] + [Thing(s, c, b) for (s, c), b in zip(others, boxes[n:])]
        rng.shuffle(things)
        return Sample(function, render_scene(things, size),
                      f"How many {colour} {shape}s are in the image? Answer with a number.", str(n), scene=things)
    if function == "ground":
        others = _other_kinds(rng, shape, colour, rng.randint(1, 3))
        boxes = place_boxes(rng, len(others) + 1, size, 2 * side)
        things = [Thing(shape, colour, boxes[0])] + [Thing(s, c, b) for (s, c), b in zip(others, boxes[1:])]
        return Sample(function, render_scene(things, size),
                      f"Where is the {colour} {shape}? Answer with its bounding box.", unit_box(list(boxes[0]), size),
                      list(boxes[0]), things)
    if function == "recog":
        # Binding: one distractor shares the colour, one the shape; the asked kind is present half the time.
        same_colour = (rng.choice([s for s in SHAPES if s != shape]), colour)
        same_shape = (shape, rng.choice([c for c in COLOURS if c != colour]))
        kinds = [same_colour, same_shape] + _other_kinds(rng, shape, colour, rng.randint(0, 2))
        present = rng.random() < 0.5
        kinds += [(shape, colour)] if present else []
        boxes = place_boxes(rng, len(kinds), size, side)
        things = [Thing(s, c, b) for (s, c), b in zip(kinds, boxes)]
        return Sample(function, render_scene(things, size),
                      f"Is there {_article(colour)} {colour} {shape} in the image? Answer yes or no.",
                      "yes" if present else "no", scene=things)
    if function == "ocr":
        words = rng.sample(TRAIN_WORDS if split == "train" else HELD_OUT, 2)
        inks = rng.sample(list(INKS), 2)
        font = int(size // 6 * rng.uniform(0.85, 1.15))
        shift = rng.randint(-size // 12, size // 12)
        lines = [(words[0], INKS[inks[0]], (shift, -size // 5)), (words[1], INKS[inks[1]], (-shift, size // 5))]
        asked = rng.randrange(2)
        question = (f"What word is written in {inks[asked]}?" if rng.random() < 0.5 else
                    f"What word is at the {('top', 'bottom')[asked]}?")
        return Sample(function, render_text(lines, size, font), question + " Answer with the word.", words[asked])
    raise ValueError(f"unknown function {function!r}")
