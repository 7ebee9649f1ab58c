"""Word alignment of nano's image tokens: a training signal that makes each token showing an object look, to the
language model, like the words that name it.

Why: a recognition question must find the image tokens that match its words. SmolLM2 learns that lookup within
200 steps when each object stands in the prompt as the mean embedding of its words (" red circle"), and not in
300 when it stands as a learnt vector of its own (`research/nano_v2/recog_lookup.py`): the pretrained attention already
matches words with words. So the projector is also trained to write, at every token that holds a quarter of an
object or is half covered by one, its words' mean embedding, nearer it than any other kind's (`alignment_loss`:
direction, norm and contrast, weighed by ``--align-words``). With ``--align-letters`` an OCR image's tokens are
trained the same way towards the letter each shows, in its ink (`GLYPHS`: " red" and "b"), the tokens a spelled
answer writes. With ``words`` (suite v1, whose OCR images show one word of `WORDS`), every token the word's ink
covers is trained towards the word's own tokens, the ones its answer writes: reading becomes copying.
"""

from __future__ import annotations

import string

import torch

from vfl.probes.questions import INKS
from vfl.probes.render import COLOURS, SHAPES, WORDS, Glyph, Word

KINDS = [(s, c) for s in SHAPES for c in COLOURS]
GLYPHS = [(letter, ink) for letter in string.ascii_lowercase for ink in INKS]  # letters, after the kinds
NO_KIND = -1  # a token that shows no object or letter (see `cell_kinds`), or one of a sample without a scene
TEMPERATURE = 0.05  # of `alignment_loss`'s contrast between kinds (0.1 fitted as well in a first trial)


def target_index(thing, letters: bool = False, words: bool = False) -> int:
    """``thing``'s row in the alignment's targets: a `Thing`'s kind in `KINDS`; with ``letters``, a `Glyph`'s
    (letter, ink) after them, at len(KINDS) + its index in `GLYPHS`; with ``words``, a `Word`'s text after
    those, at its index in `WORDS`; else `NO_KIND`."""
    if isinstance(thing, Word):
        if words and thing.text in WORDS:
            return len(KINDS) + len(GLYPHS) * letters + WORDS.index(thing.text)
        return NO_KIND
    if isinstance(thing, Glyph):
        if letters and (thing.char, thing.ink) in GLYPHS:
            return len(KINDS) + GLYPHS.index((thing.char, thing.ink))
        return NO_KIND
    return KINDS.index((thing.shape, thing.colour))


def cell_kinds(scene, size: int, cell: int, letters: bool = False, words: bool = False) -> list[int]:
    """Per image token, row by row, the `target_index` of the drawn thing with the most area in its ``cell`` px
    square, where that is a quarter of the thing or half the square, else `NO_KIND` (nano's tokens: 224 px in
    28 px cells, the 2x2 shuffle's row-major order). A quarter of the object: a 24 px object can straddle four
    cells evenly; half the square: a large one (grounding's) covers many cells whole. ``letters``: an OCR
    image's letters (`Glyph`s) count too; a letter is 10-32 px wide, so one of two that share a cell loses it.
    ``words``: a `Word` counts, and its ink box is long and low, so a token it half covers is its."""
    side = size // cell
    targets = [(thing.box, target_index(thing, letters, words)) for thing in scene or ()]
    targets = [(box, index) for box, index in targets if index != NO_KIND]
    kinds = []
    for row in range(side):
        for col in range(side):
            x0, y0 = col * cell, row * cell
            best, kind = 0, NO_KIND
            for (bx0, by0, bx1, by1), index in targets:
                area = max(0, min(bx1, x0 + cell) - max(bx0, x0)) * max(0, min(by1, y0 + cell) - max(by0, y0))
                if area > best and (4 * area >= (bx1 - bx0) * (by1 - by0) or 2 * area >= cell * cell):
                    best, kind = area, index
            kinds.append(kind)
    return kinds


@torch.no_grad()
def word_vectors(tokenizer, embed: torch.nn.Embedding, letters: bool = False, words: bool = False) -> torch.Tensor:
    """(targets, width): each kind's mean input embedding of the tokens of " <colour> <shape>"; with
    ``letters``, then each `GLYPHS` entry's of " <ink>" and the letter's own token (the one a spelled OCR answer
    writes, `vfl.nano.batches.spelled`); with ``words``, then each of `WORDS`' tokens as its answer writes them
    (no leading space). SmolLM2 ties its input and output embeddings, so a token aligned there points the
    answer at the word it shows."""
    def mean(ids: list[int]) -> torch.Tensor:
        return embed(torch.tensor(ids, device=embed.weight.device)).float().mean(0)

    rows = [mean(tokenizer(f" {colour} {shape}", add_special_tokens=False).input_ids) for shape, colour in KINDS]
    if letters:
        rows += [mean(tokenizer(f" {ink}", add_special_tokens=False).input_ids + [tokenizer.convert_tokens_to_ids(letter)])
                 for letter, ink in GLYPHS]
    if words:
        rows += [mean(tokenizer(word, add_special_tokens=False).input_ids) for word in WORDS]
    return torch.stack(rows)


def alignment_loss(image: torch.Tensor, kinds: torch.Tensor, vectors: torch.Tensor,
                   temperature: float | None = TEMPERATURE) -> torch.Tensor:
    """Mean over the tokens with a kind of (1 - cos(token, v)) + ln(|token| / |v|)^2 + the cross-entropy of the
    token's kind among all kinds, by cos / ``temperature`` (none with None), v its words' vector; 0 where no token
    has a kind.
    ``image``: (B, tokens, width) projector outputs; ``kinds``: (B, tokens) indices or `NO_KIND`.
    Direction and norm bring a token near its words; the contrast makes it nearer them than any other kind's.
    Without it the kinds are barely told apart: the 28 vectors share most of their direction (cosine 0.63 between
    kinds on average, 0.82 within a shape), so a token at the shared mean already scores cosine 0.8, and 1000
    projector-only steps left its nearest kind right for 0.275 of object tokens (0.978 with it;
    `research/nano_v2/align_tokens.py --fit`).
    An untrained projector writes tokens about 20x the words' norm. A squared error relative to |v| (about 500 at
    the first step) filled Adam's second moments, and the projector then moved too slowly to reach even the best
    constant in 160 steps; one relative to |token|^2 + |v|^2 is flat out there and did not move in 40."""
    chosen = kinds != NO_KIND
    if not chosen.any():
        return image.sum() * 0.0
    tokens, target = image[chosen].float(), vectors[kinds[chosen]]
    direction = 1 - torch.nn.functional.cosine_similarity(tokens, target, dim=-1)
    scale = torch.log(tokens.norm(dim=-1).clamp(min=1e-6) / target.norm(dim=-1)).pow(2)
    loss = direction + scale
    if temperature is not None:
        cosines = torch.nn.functional.normalize(tokens, dim=-1) @ torch.nn.functional.normalize(vectors, dim=-1).T
        loss = loss + torch.nn.functional.cross_entropy(cosines / temperature, kinds[chosen], reduction="none")
    return loss.mean()
