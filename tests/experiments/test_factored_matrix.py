import pytest
import torch

from lens_core.factored_matrix import FactoredMatrix


@pytest.fixture
def fm():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, 10, 4, generator=gen, dtype=torch.float64)
    B = torch.randn(2, 3, 4, 10, generator=gen, dtype=torch.float64)
    return FactoredMatrix(A, B)


def test_products_and_shape(fm):
    dense = fm.A @ fm.B
    assert fm.shape == (2, 3, 10, 10)
    torch.testing.assert_close(fm.AB, dense)
    torch.testing.assert_close(fm.BA, fm.B @ fm.A)
    torch.testing.assert_close(fm.T.AB, dense.transpose(-1, -2))


def test_svd_matches_dense(fm):
    U, S, V = fm.svd()
    dense = fm.AB
    torch.testing.assert_close(S, torch.linalg.svdvals(dense)[..., :4])
    torch.testing.assert_close(U @ torch.diag_embed(S) @ V.transpose(-1, -2), dense)
    eye = torch.eye(4, dtype=dense.dtype).expand(2, 3, 4, 4)
    torch.testing.assert_close(U.transpose(-1, -2) @ U, eye)
    torch.testing.assert_close(V.transpose(-1, -2) @ V, eye)


def test_eigenvalues_are_the_nonzero_eigenvalues_of_the_product(fm):
    dense_eigs = torch.linalg.eigvals(fm.AB[0, 0])  # 10 values, 6 of them ~0
    big = dense_eigs[dense_eigs.abs() > 1e-8]
    ours = fm.eigenvalues[0, 0]
    assert ours.shape == (4,)
    key = lambda z: (round(z.real.item(), 6), round(z.imag.item(), 6))  # noqa: E731
    assert sorted(map(key, big)) == sorted(map(key, ours))


def test_norm_matches_dense(fm):
    torch.testing.assert_close(fm.norm(), torch.linalg.matrix_norm(fm.AB))


def test_indexing_and_matmul(fm):
    dense = fm.AB
    torch.testing.assert_close(fm[1].AB, dense[1])
    torch.testing.assert_close(fm[1, 2].AB, dense[1, 2])
    torch.testing.assert_close(fm[0, 1, 3].AB, dense[0, 1, 3:4])
    torch.testing.assert_close(fm[0, 1, :5, -1].AB, dense[0, 1, :5, -1:])
    other = torch.randn(10, 7, dtype=torch.float64)
    torch.testing.assert_close((fm @ other).AB, dense @ other)
    torch.testing.assert_close((other.T @ fm).AB, other.T @ dense)
    vec = torch.randn(10, dtype=torch.float64)
    torch.testing.assert_close(fm @ vec, dense @ vec)
    torch.testing.assert_close(vec @ fm, vec @ dense)
    product = fm @ fm.T
    torch.testing.assert_close(product.AB, dense @ dense.transpose(-1, -2))
    wide = FactoredMatrix(torch.randn(10, 6, dtype=torch.float64), torch.randn(6, 10, dtype=torch.float64))
    torch.testing.assert_close((wide @ fm[0, 0]).AB, wide.AB @ dense[0, 0])


def test_rejects_mismatched_factors():
    with pytest.raises(ValueError):
        FactoredMatrix(torch.randn(5, 3), torch.randn(4, 5))
    with pytest.raises(ValueError):
        FactoredMatrix(torch.randn(5, 3), torch.randn(3, 4)).BA
