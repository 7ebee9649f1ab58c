import torch

from vfl.vision_layers import group_layers, linear_cka, similarity_matrices


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
