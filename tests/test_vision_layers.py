import json

import pytest
import torch

from vfl.models.tiny import FAMILIES, build_tiny
from vfl.probes.generate import make_pair
from vfl.vision_layers import analyse, group_layers, layer_states, linear_cka, load_encoder, similarity_matrices


def _kernel_cka(x, y):
    """Reference CKA through centred Gram matrices (HSIC), independent of the feature-space formula."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = h @ (x.double() @ x.double().T) @ h, h @ (y.double() @ y.double().T) @ h
    return float((k * l).sum() / ((k * k).sum().sqrt() * (l * l).sum().sqrt()))


def test_cka_matches_the_kernel_definition_and_is_rotation_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    y = x @ torch.randn(16, 24, generator=g) + 0.5 * torch.randn(200, 24, generator=g)
    assert abs(linear_cka(x, y) - _kernel_cka(x, y)) < 1e-9
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    assert abs(linear_cka(x.double() @ rotation, y) - linear_cka(x, y)) < 1e-9
    assert abs(linear_cka(3.0 * x, y) - linear_cka(x, y)) < 1e-9
    assert abs(linear_cka(x, x) - 1.0) < 1e-12
    # not invariant to an arbitrary (non-orthogonal) linear map: a wrong, too-forgiving formula fails here
    skew = torch.randn(16, 16, generator=g)
    assert abs(linear_cka(x @ skew, y) - linear_cka(x, y)) > 1e-3


def test_matrices_are_symmetric_with_unit_diagonal():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(300, 8, generator=g)
    states = [base + 0.3 * k * torch.randn(300, 8, generator=g) for k in range(5)]
    cosine, cka = similarity_matrices(states)
    for matrix in (cosine, cka):
        t = torch.tensor(matrix)
        assert torch.allclose(t, t.T) and torch.allclose(t.diag(), torch.ones(5))


def test_grouping_is_contiguous_covers_every_layer_and_finds_planted_blocks():
    sizes = (4, 5, 3)
    count = sum(sizes)
    matrix = torch.full((count, count), 0.1)
    start = 0
    for size in sizes:
        matrix[start:start + size, start:start + size] = 0.9
        start += size
    matrix.fill_diagonal_(1.0)
    groups = group_layers(matrix.tolist())
    assert [len(g) for g in groups] == list(sizes)
    assert sum(groups, []) == list(range(count))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_supported_family_s_vision_tower_is_analysed_from_its_checkpoint(tmp_path, family):
    """The tower each family feeds its images through (pixels, an image-splitting processor's crops, a Qwen-VL
    tower's flattened patches): all its layers, the same sampled tokens in each, grouped."""
    model, processor = build_tiny(family, vision_layers=4)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    images = [image for i in range(2) for image in make_pair("count", i, 64, 0)[1:3]]
    record = analyse(str(tmp_path / "model"), images, tmp_path / "out")
    assert record["layers"] == [1, 2, 3, 4]
    assert sum(record["groups"].values(), []) == [1, 2, 3, 4]
    cka = torch.tensor(json.loads((tmp_path / "out" / "similarity.json").read_text())["cka"])
    assert cka.shape == (4, 4) and torch.allclose(cka.diag(), torch.ones(4, dtype=cka.dtype))
    # the tower read from the checkpoint is the saved model's own: every weight loaded, none left at a fresh init
    loaded = layer_states(*load_encoder(str(tmp_path / "model")), images)
    own = layer_states(model.eval().get_encoder(modality="image"), processor.image_processor, images)
    assert all(torch.equal(a, b) for a, b in zip(loaded, own, strict=True))


def test_a_dual_encoder_is_analysed_on_its_image_side(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=5, num_attention_heads=2, image_size=32,
                  patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip")
    encoder, processor = load_encoder(str(tmp_path / "clip"))
    assert type(encoder).__name__ == "CLIPVisionModel"  # the image side, not the text tower or the pair
    images = [make_pair("ocr", i, 64, 0)[1] for i in range(2)]
    record = analyse(str(tmp_path / "clip"), images, tmp_path / "out")
    assert record["layers"] == [1, 2, 3, 4, 5]
    # in bfloat16 (--dtype): the pixels follow the encoder's dtype, the states come back in float32, close
    half, _ = load_encoder(str(tmp_path / "clip"), dtype="bfloat16")
    assert next(half.parameters()).dtype == torch.bfloat16
    for full, low in zip(layer_states(encoder, processor, images), layer_states(half, processor, images), strict=True):
        assert low.dtype == torch.float32 and torch.allclose(low, full, atol=0.1, rtol=0.05)
