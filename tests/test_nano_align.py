"""Word alignment's targets: which image tokens show which object or letter, and the loss that pulls them to its
words."""

import math
import random

import numpy as np
import pytest
import torch

from vfl.nano.align import GLYPHS, KINDS, NO_KIND, TEMPERATURE, alignment_loss, cell_kinds, word_vectors
from vfl.probes.questions import INKS, question_pair
from vfl.nano.suite_v1 import make_sample
from vfl.probes.render import BACKGROUND, WORDS, Glyph, Thing, Word, render_text, text_glyphs


def test_a_token_takes_the_object_it_holds_a_quarter_of():
    whole = Thing("circle", "red", (0, 0, 28, 28))  # fills token (0, 0)
    straddling = Thing("square", "blue", (100, 100, 124, 124))  # 24 px, 12 px in each of tokens (3, 3)..(4, 4)
    sliver = Thing("diamond", "green", (166, 0, 190, 24))  # 2 px in token (0, 5), 22 px in token (0, 6)
    kinds = cell_kinds([whole, straddling, sliver], 224, 28)
    assert len(kinds) == 64
    expected = {0: KINDS.index(("circle", "red")), 6: KINDS.index(("diamond", "green"))}
    expected.update({8 * r + c: KINDS.index(("square", "blue")) for r in (3, 4) for c in (3, 4)})
    assert {i: k for i, k in enumerate(kinds) if k != NO_KIND} == expected
    assert cell_kinds(None, 224, 28) == [NO_KIND] * 64


def test_a_large_object_takes_the_tokens_it_covers_half_of():
    big = Thing("triangle", "black", (0, 0, 84, 70))  # 3 x 2.5 tokens: too large for a quarter in any one
    kinds = cell_kinds([big], 224, 28)
    assert [i for i, k in enumerate(kinds) if k != NO_KIND] == [0, 1, 2, 8, 9, 10, 16, 17, 18]  # row 2 is half


def test_each_token_takes_the_object_with_most_area_in_it():
    left = Thing("circle", "red", (0, 0, 16, 28))
    right = Thing("square", "blue", (16, 0, 28, 28))
    assert cell_kinds([left, right], 56, 28)[0] == KINDS.index(("circle", "red"))


def test_each_drawn_letter_has_a_glyph_whose_box_holds_its_ink():
    lines = [("bear", "red", (0, -40)), ("fox", "blue", (10, 40))]
    glyphs = text_glyphs(lines, 224, 37)
    assert [(g.char, g.ink) for g in glyphs] == [(c, "red") for c in "bear"] + [(c, "blue") for c in "fox"]
    assert all(a.box[0] < b.box[0] for a, b in zip(glyphs, glyphs[1:]) if a.ink == b.ink)  # left to right
    image = np.asarray(render_text([(text, INKS[ink], offset) for text, ink, offset in lines], 224, 37), dtype=int)
    ink = np.abs(image - np.array(BACKGROUND)).sum(-1) > 0
    inside = np.zeros_like(ink)
    for glyph in glyphs:
        x0, y0, x1, y1 = glyph.box
        inside[y0:y1, x0:x1] = True
        assert ink[y0:y1, x0:x1].any()
    assert (ink & ~inside).sum() <= 0.02 * ink.sum()  # anti-aliased fringes may fall outside


def test_an_ocr_pairs_letters_differ_only_in_the_asked_word():
    for index in range(20):
        pair = question_pair("ocr", random.Random(index))
        inks = {g.ink for g in pair.scene_a}
        assert len(inks) == 2 and {g.ink for g in pair.scene_b} == inks
        words = [{ink: "".join(g.char for g in scene if g.ink == ink) for ink in inks}
                 for scene in (pair.scene_a, pair.scene_b)]
        asked = [ink for ink in inks if words[0][ink] != words[1][ink]]
        assert len(asked) == 1 and (words[0][asked[0]], words[1][asked[0]]) == (pair.answer_a, pair.answer_b)
        other = [g for g in pair.scene_a if g.ink != asked[0]]
        assert other == [g for g in pair.scene_b if g.ink != asked[0]]


def test_a_letter_is_aligned_only_with_letters_and_only_if_lowercase():
    glyph = Glyph("b", "red", (0, 0, 20, 28))  # a letter's width, one token's height
    assert cell_kinds([glyph], 224, 28) == [NO_KIND] * 64
    kinds = cell_kinds([glyph, Glyph("B", "red", (28, 0, 48, 28))], 224, 28, letters=True)
    assert kinds == [len(KINDS) + GLYPHS.index(("b", "red"))] + [NO_KIND] * 63
    thing = Thing("circle", "red", (56, 0, 84, 28))
    assert cell_kinds([thing], 224, 28, letters=True)[2] == KINDS.index(("circle", "red"))


def test_a_word_is_aligned_only_with_words_after_the_kinds_and_the_glyphs():
    word = Word("apple", (0, 14, 112, 56))  # half of token row 0 and all of row 1, over their first four tokens
    assert cell_kinds([word], 224, 28) == [NO_KIND] * 64
    row = len(KINDS) + WORDS.index("apple")
    kinds = cell_kinds([word], 224, 28, words=True)
    assert [k for k in kinds if k != NO_KIND] == [row] * 8 and kinds[:4] == kinds[8:12] == [row] * 4
    assert set(cell_kinds([word], 224, 28, letters=True, words=True)) == {NO_KIND, row + len(GLYPHS)}
    assert set(cell_kinds([Word("zzz", (0, 0, 112, 56))], 224, 28, words=True)) == {NO_KIND}  # not in WORDS


@pytest.mark.parametrize("function", ["recog", "count", "ground", "ocr"])
def test_every_v1_sample_carries_what_it_draws(function):
    """Suite v1 samples name their objects or their word with its ink box, so every function can be aligned;
    recognition holds as many objects whether the answer is yes or no."""
    counts = {"yes": set(), "no": set()}
    for index in range(30):
        sample = make_sample(function, index, 0)
        ink = np.argwhere((np.asarray(sample.image) != BACKGROUND).any(-1))
        inside = [inside_boxes([point], [t.box for t in sample.scene]) for point in ink]
        # a shape's box holds all of it; a word's the ink of its glyphs' boxes (`text_glyphs`), whose rounding
        # leaves out an anti-aliased pixel row now and then
        assert all(inside) if function != "ocr" else sum(inside) >= 0.98 * len(ink)
        if function == "count":
            assert len(sample.scene) == int(sample.answer)
        if function == "ground":
            assert [list(t.box) for t in sample.scene] == [sample.box]
        if function == "ocr":
            (word,) = sample.scene  # the word, in a box that holds its ink (above), within 6 px of it
            assert word.text == sample.answer and isinstance(word, Word)
            tight = (ink[:, 1].min(), ink[:, 0].min(), ink[:, 1].max() + 1, ink[:, 0].max() + 1)
            assert all(abs(a - b) <= 6 for a, b in zip(tight, word.box)), (tight, word.box)
        if function == "recog":
            counts[sample.answer].add(len(sample.scene))
    if function == "recog":
        assert counts["yes"] == counts["no"] and len(counts["yes"]) > 1  # the number of objects never answers


def inside_boxes(points, boxes) -> bool:
    return all(any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in boxes) for y, x in points)


class Tokenizer:
    def __call__(self, text, add_special_tokens=False):
        return type("Encoding", (), {"input_ids": [len(word) for word in text.split()]})()

    def convert_tokens_to_ids(self, token):
        return 8 + ord(token) - ord("a")


def test_word_vectors_are_the_mean_embeddings_of_each_kinds_words():
    embed = torch.nn.Embedding(16, 4)
    vectors = word_vectors(Tokenizer(), embed)
    assert vectors.shape == (len(KINDS), 4)
    k = KINDS.index(("circle", "red"))  # " red circle": tokens 3 and 6 of the toy tokenizer
    assert torch.allclose(vectors[k], (embed.weight[3] + embed.weight[6]) / 2)


def test_with_letters_each_glyph_is_the_mean_of_its_ink_and_its_letter():
    embed = torch.nn.Embedding(40, 4)
    vectors = word_vectors(Tokenizer(), embed, letters=True)
    assert vectors.shape == (len(KINDS) + len(GLYPHS), 4)
    assert torch.equal(vectors[: len(KINDS)], word_vectors(Tokenizer(), embed))
    g = len(KINDS) + GLYPHS.index(("b", "blue"))  # " blue": toy token 4; "b": 8 + 1
    assert torch.allclose(vectors[g], (embed.weight[4] + embed.weight[9]) / 2)


def test_with_words_each_word_is_the_mean_of_the_tokens_its_answer_writes():
    embed = torch.nn.Embedding(16, 4)
    vectors = word_vectors(Tokenizer(), embed, words=True)
    assert vectors.shape == (len(KINDS) + len(WORDS), 4)
    assert torch.equal(vectors[: len(KINDS)], word_vectors(Tokenizer(), embed))
    assert torch.equal(vectors[len(KINDS) + WORDS.index("apple")], embed.weight[5])  # "apple": toy token 5


def test_alignment_loss_weighs_direction_norm_and_contrast_on_tokens_with_a_kind():
    vectors = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # cosine 0.8 apart
    kinds = torch.tensor([[0, NO_KIND], [1, NO_KIND]])

    def contrast(own: float, other: float) -> float:  # cross-entropy of the own kind, by cosine / TEMPERATURE
        return math.log(1 + math.exp((other - own) / TEMPERATURE))

    exact = torch.stack([vectors[0], torch.full((2,), 99.0)]), torch.stack([vectors[1], torch.zeros(2)])
    loss = alignment_loss(torch.stack(exact), kinds, vectors).item()  # the NO_KIND tokens are ignored
    assert loss == pytest.approx(contrast(1, 0.8), rel=1e-5)
    opposite = torch.stack([-vectors[0], torch.zeros(2)]), torch.stack([-vectors[1], torch.zeros(2)])
    loss = alignment_loss(torch.stack(opposite), kinds, vectors).item()
    assert loss == pytest.approx(2.0 + contrast(-1, -0.8), rel=1e-5)
    longer = torch.stack([math.e * vectors[0], torch.zeros(2)]), torch.stack([vectors[1] / math.e, torch.zeros(2)])
    assert alignment_loss(torch.stack(longer), kinds, vectors).item() == pytest.approx(1.0 + contrast(1, 0.8), rel=1e-5)
    image = torch.stack([20 * vectors[0], torch.zeros(2)]).unsqueeze(0).requires_grad_(True)
    alignment_loss(image, kinds[:1], vectors).backward()
    assert image.grad[0, 0] @ vectors[0] > 0 and image.grad[0, 0].norm() < 1  # shrinks it, gently
    empty = alignment_loss(image, torch.full((1, 2), NO_KIND), vectors)
    assert empty.item() == 0.0


def test_the_contrast_pulls_a_token_away_from_the_nearer_kind():
    vectors = torch.tensor([[1.0, 0.0], [0.8, 0.6]])  # unit vectors, cosine 0.8 apart
    token = torch.tensor([[[0.6, 0.8]]], requires_grad=True)  # unit, of kind 0, but nearer kind 1
    alignment_loss(token, torch.tensor([[0]]), vectors).backward()
    step = -token.grad[0, 0]  # the way gradient descent moves it
    assert step @ torch.tensor([1.0, 0.0]) > 0 and step @ torch.tensor([0.0, 1.0]) < 0  # towards kind 0
    plain = torch.tensor([[[0.6, 0.8]]], requires_grad=True)
    (1 - torch.nn.functional.cosine_similarity(plain[0], vectors[:1])).sum().backward()
    assert step.norm() > 5 * plain.grad.norm()  # far more than direction alone would
