"""Word alignment's targets: which image tokens show which object, and the loss that pulls them to its words."""

import math

import pytest
import torch

from vfl.nano.align import KINDS, NO_KIND, TEMPERATURE, alignment_loss, cell_kinds, word_vectors
from vfl.probes.render import Thing


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


class Tokenizer:
    def __call__(self, text, add_special_tokens=False):
        return type("Encoding", (), {"input_ids": [len(word) for word in text.split()]})()


def test_word_vectors_are_the_mean_embeddings_of_each_kinds_words():
    embed = torch.nn.Embedding(16, 4)
    vectors = word_vectors(Tokenizer(), embed)
    assert vectors.shape == (len(KINDS), 4)
    k = KINDS.index(("circle", "red"))  # " red circle": tokens 3 and 6 of the toy tokenizer
    assert torch.allclose(vectors[k], (embed.weight[3] + embed.weight[6]) / 2)


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
