"""FactoredMatrix against transformer-lens 4.3.0's, on the same factors: products and the inner
dimension they keep, spectra (sign-free), indexing, corners, half precision, and the model's OV/QK."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import FactoredMatrix as TLFactoredMatrix

from lens_core.factored_matrix import FactoredMatrix
from tl_pairs import assert_same


def _factors(*lead, ldim=10, mdim=4, rdim=8, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead, ldim, mdim, generator=gen).to(dtype), torch.randn(*lead, mdim, rdim, generator=gen).to(dtype))


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_products_keep_the_same_inner_dimension(lead):
    A, B = _factors(*lead)
    ours, theirs = FactoredMatrix(A, B), TLFactoredMatrix(A, B)
    gen = torch.Generator().manual_seed(1)
    for other in (torch.randn(8, 5, generator=gen), torch.randn(8, 20, generator=gen), torch.randn(8, generator=gen)):
        mine, ref = ours @ other, theirs @ other
        if isinstance(ref, TLFactoredMatrix):
            assert mine.mdim == ref.mdim and tuple(mine.shape) == tuple(ref.shape)
            mine, ref = mine.AB, ref.AB
        assert_same(mine, ref)
    for other in (torch.randn(6, 10, generator=gen), torch.randn(30, 10, generator=gen), torch.randn(10, generator=gen)):
        mine, ref = other @ ours, other @ theirs
        if isinstance(ref, TLFactoredMatrix):
            assert mine.mdim == ref.mdim
            mine, ref = mine.AB, ref.AB
        assert_same(mine, ref)
    C, D = _factors(*lead, ldim=8, mdim=3, rdim=6, seed=2)
    product, ref = ours @ FactoredMatrix(C, D), theirs @ TLFactoredMatrix(C, D)
    assert product.mdim == ref.mdim
    assert_same(product.AB, ref.AB)
    assert_same((ours * 2.5).AB, (theirs * 2.5).AB)
    assert_same(ours.T.AB, theirs.T.AB)
    assert ours.pair[0] is ours.A and ours.has_leading_dims == theirs.has_leading_dims


@pytest.mark.parametrize("shape", [(10, 4, 8), (6, 9, 7), (12, 3, 12)])
def test_spectra(shape):
    ldim, mdim, rdim = shape
    A, B = _factors(2, ldim=ldim, mdim=mdim, rdim=rdim)
    ours, theirs = FactoredMatrix(A, B), TLFactoredMatrix(A, B)
    assert_same(ours.S, theirs.S)
    assert ours.U.shape == theirs.U.shape and ours.V.shape == theirs.V.shape and ours.Vh.shape == theirs.V.shape
    assert_same(ours.U @ ours.collapse_l(), theirs.AB)  # singular vectors are unique only up to sign
    assert_same(ours.collapse_r() @ ours.V.transpose(-1, -2), theirs.AB)
    assert_same(ours.collapse_l().norm(dim=-1), theirs.collapse_l().norm(dim=-1))
    assert_same(ours.make_even().AB, theirs.make_even().AB)
    assert_same(ours.norm(), theirs.norm())
    assert ours.svd() is ours.svd()  # computed once
    if ldim == rdim:
        key = lambda z: sorted(z.tolist(), key=lambda c: (round(c.real, 4), round(c.imag, 4)))  # noqa: E731
        assert torch.allclose(torch.tensor(key(ours.eigenvalues[0])), torch.tensor(key(theirs.eigenvalues[0])), atol=1e-4)


def test_indexing_and_corners():
    A, B = _factors(2, 3)
    ours, theirs = FactoredMatrix(A, B), TLFactoredMatrix(A, B)
    for index in (1, (1, 2), (0, 1, 3), (0, 1, slice(0, 5), -1), (slice(None), 2), (1, 2, slice(2, 6), slice(1, 4))):
        mine, ref = ours[index], theirs[index]
        assert tuple(mine.shape) == tuple(ref.shape), index
        assert_same(mine.AB, ref.AB)
    for k in (2, 3, 5):
        assert_same(ours.get_corner(k), theirs.get_corner(k))
    assert_same(ours.unsqueeze(0).AB, theirs.unsqueeze(0).AB)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    A, B = _factors(3, dtype=dtype)
    ours, theirs = FactoredMatrix(A, B), TLFactoredMatrix(A, B)
    assert ours.S.dtype == theirs.S.dtype
    assert_same(ours.S, theirs.S, rel=1e-5 if dtype == torch.float64 else 1e-3)
    assert_same(ours.norm(), theirs.norm(), rel=1e-5 if dtype == torch.float64 else 1e-2)
    assert ours.AB.dtype == dtype


def test_model_circuits(bundled):
    ours, bridge, _ = bundled
    for name in ("OV", "QK"):
        mine, ref = getattr(ours, name), getattr(bridge, name)
        assert tuple(mine.shape) == tuple(ref.shape)
        assert_same(mine.S, ref.S)
        assert_same(mine[1, 2].norm(), ref[1, 2].norm())
