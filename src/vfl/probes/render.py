"""Draw the synthetic scenes behind every probe (and, later, `nano`'s training data).

Only PIL and its built-in FreeType font: no system fonts, fully deterministic for a given RNG.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
    "purple": (140, 60, 180), "orange": (240, 130, 20), "black": (20, 20, 20),
}
BACKGROUND = (245, 245, 245)
MAX_COUNT = 6  # the most objects of one kind a built-in counting question asks about
# A closed vocabulary of short common English words (OCR probes and training data draw from it).
WORDS = (
    "apple", "bread", "chair", "dance", "eagle", "flame", "grape", "house", "input", "juice", "knife", "lemon",
    "money", "night", "ocean", "paper", "queen", "river", "stone", "table", "uncle", "voice", "water", "youth",
    "zebra", "cloud", "dream", "earth", "field", "glass", "heart", "image", "light", "music", "north", "plant",
    "radio", "smile", "train", "value", "world", "bird", "cake", "door", "fish", "gold", "hill", "king", "lamp",
    "moon", "nose", "rain", "ship", "tree", "wind", "star", "snow", "road", "sand", "wolf",
)


@dataclass(frozen=True)
class Thing:
    """One drawn object: its shape, colour and pixel box (x0, y0, x1, y1), right/bottom exclusive."""

    shape: str
    colour: str
    box: tuple[int, int, int, int]


def draw_thing(draw: ImageDraw.ImageDraw, thing: Thing) -> None:
    x0, y0, x1, y1 = thing.box
    fill = COLOURS[thing.colour]
    if thing.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif thing.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif thing.shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    elif thing.shape == "diamond":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.polygon([(cx, y0), (x1 - 1, cy), (cx, y1 - 1), (x0, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {thing.shape!r}")


def render_scene(things: list[Thing], size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for thing in things:
        draw_thing(draw, thing)
    return image


def render_word(word: str, size: int, font_size: int | None = None, offset: tuple[int, int] = (0, 0),
                colour: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """The word centred (then shifted by ``offset``) in PIL's built-in font: with the defaults, only the
    word differs between two renders."""
    return render_text([(word, colour, offset)], size, font_size)


@dataclass(frozen=True)
class Glyph:
    """One drawn character: the character, its ink (as the caller named it) and the pixel box of its ink."""

    char: str
    ink: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Word:
    """One drawn word: its text and the pixel box of all its ink (suite v1's OCR images)."""

    text: str
    box: tuple[int, int, int, int]


def word_ink(word: str, size: int, font_size: int | None = None, offset: tuple[int, int] = (0, 0)) -> Word:
    """The `Word` that `render_word` draws with the same arguments: the union of its glyphs' ink boxes."""
    boxes = [g.box for g in text_glyphs([(word, "", offset)], size, font_size)]
    return Word(word, (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                       max(b[3] for b in boxes)))


def _text_origins(draw: ImageDraw.ImageDraw, lines, size: int, font) -> list[tuple[float, float]]:
    """Where each (text, ink, offset) line is drawn: centred, then shifted by its offset."""
    origins = []
    for text, _, offset in lines:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        origins.append(((size - (right - left)) / 2 - left + offset[0], (size - (bottom - top)) / 2 - top + offset[1]))
    return origins


def _font(size: int, font_size: int | None):
    return ImageFont.load_default(size=font_size or max(8, size // 5))


def render_text(lines: list[tuple[str, tuple[int, int, int], tuple[int, int]]], size: int,
                font_size: int | None = None) -> Image.Image:
    """Each (text, ink, offset): the text centred, then shifted by offset, in PIL's built-in font."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(size, font_size)
    for (text, colour, _), origin in zip(lines, _text_origins(draw, lines, size, font)):
        draw.text(origin, text, fill=colour, font=font)
    return image


def text_glyphs(lines: list[tuple[str, str, tuple[int, int]]], size: int, font_size: int | None = None) -> list[Glyph]:
    """The characters `render_text` draws for the same lines (ink given by name here), with their boxes in
    reading order; blank characters have none and are left out."""
    draw = ImageDraw.Draw(Image.new("RGB", (size, size)))
    font = _font(size, font_size)
    glyphs = []
    for (text, ink, _), (x, y) in zip(lines, _text_origins(draw, lines, size, font)):
        for i, char in enumerate(text):
            left, top, right, bottom = draw.textbbox((x + font.getlength(text[:i]), y), char, font=font)
            if right > left and bottom > top:
                glyphs.append(Glyph(char, ink, (round(left), round(top), round(right), round(bottom))))
    return glyphs


def place_boxes(rng: random.Random, count: int, size: int, thing_size: int) -> list[tuple[int, int, int, int]]:
    """``count`` square boxes of side ``thing_size`` on distinct cells of a grid, so they never overlap."""
    cells_per_side = size // thing_size
    margin = (size - cells_per_side * thing_size) // 2
    cells = [(r, c) for r in range(cells_per_side) for c in range(cells_per_side)]
    if count > len(cells):
        raise ValueError(f"{count} objects of {thing_size}px do not fit a {size}px image")
    return [_cell_box(cell, thing_size, margin) for cell in rng.sample(cells, count)]


def scatter_boxes(rng: random.Random, sides: list[int], size: int, gap: int = 4) -> list[tuple[int, int, int, int]]:
    """Square boxes of the given sides at free positions, at least ``gap`` px apart, so that boxes (the answers
    of grounding) take any place and size rather than a grid's few: each box is drawn until it fits, and a
    layout that leaves no room for the next box is drawn again."""
    def apart(box, other):
        return (box[0] >= other[2] + gap or other[0] >= box[2] + gap or box[1] >= other[3] + gap
                or other[1] >= box[3] + gap)

    for _ in range(100):
        boxes: list[tuple[int, int, int, int]] = []
        for side in sides:
            for _ in range(200):
                x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
                box = (x0, y0, x0 + side, y0 + side)
                if all(apart(box, other) for other in boxes):
                    boxes.append(box)
                    break
            else:
                break
        if len(boxes) == len(sides):
            return boxes
    raise ValueError(f"{len(sides)} objects of {max(sides)}px or less do not fit a {size}px image")


def _cell_box(cell: tuple[int, int], side: int, margin: int) -> tuple[int, int, int, int]:
    r, c = cell
    pad = max(1, side // 8)
    x0, y0 = margin + c * side + pad, margin + r * side + pad
    return (x0, y0, x0 + side - 2 * pad, y0 + side - 2 * pad)
