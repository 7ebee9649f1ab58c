"""What every nano sample is, whichever suite draws it: the functions, and a sample's fields."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

FUNCTIONS = ("recog", "count", "ground", "ocr")
# what can be trained: the four functions, and (suite v2) captions that name every object's colour and shape,
# a dense lesson in binding that a yes/no answer gives one bit of (`vfl.nano.suite_v2.describe_sample`), and
# lookups by content, the shapes of one colour or the colours of one shape (`vfl.nano.suite_v2.which_sample`)
TRAINING_FUNCTIONS = FUNCTIONS + ("describe", "which")
# the seed whose samples `vfl nano eval` scores: training on it would train on the test items
HELD_OUT_SEED = 1


@dataclass
class Sample:
    function: str
    image: Image.Image
    question: str
    answer: str
    box: list[float] | None = None  # pixels, for grounding
    scene: list | None = None  # what is drawn: objects (`Thing`s), letters (`Glyph`s) or a word (`Word`)


def unit_box(box: list[float], size: int) -> str:
    """A box as the model writes it: fractions of the image side with two decimals."""
    return "[" + ", ".join(f"{v / size:.2f}" for v in box) + "]"
