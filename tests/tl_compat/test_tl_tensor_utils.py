"""lens_core.utils's tensor and matrix helpers against transformer-lens 4.3.0's (``transformer_lens.utilities``)."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import utilities as tl_utils
from transformer_lens.FactoredMatrix import FactoredMatrix as TLFactored

from lens_core import utils
from lens_core.factored_matrix import FactoredMatrix
from tl_pairs import assert_same


def test_matrix_predicates():
    gen = torch.Generator().manual_seed(0)
    square = torch.randn(4, 4, generator=gen)
    cases = [square, square.tril(), square.triu(), torch.randn(3, 4, generator=gen), torch.randn(2, 3, 3, generator=gen),
             torch.eye(5), torch.zeros(0, 0), torch.randn(4, generator=gen)]
    for x in cases:
        assert utils.is_square(x) == tl_utils.is_square(x)
        assert utils.is_lower_triangular(x) == tl_utils.is_lower_triangular(x)
    assert utils.is_lower_triangular(square.tril()) and not utils.is_lower_triangular(square)


def test_position_ids_cumsum_and_head_repeat():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]])
    for offset in (0, 2):
        assert torch.equal(utils.get_offset_position_ids(offset, mask), tl_utils.get_offset_position_ids(offset, mask))
    assert utils.get_offset_position_ids(0, mask)[0].tolist() == [0, 0, 0, 1, 2]  # hand-checked
    x = torch.randn(2, 3, 4)
    for dim in (0, 1, -1):
        for reverse in (False, True):
            assert torch.equal(utils.get_cumsum_along_dim(x, dim, reverse), tl_utils.get_cumsum_along_dim(x, dim, reverse))
    for clone in (True, False):
        mine, theirs = utils.repeat_along_head_dimension(x, 5, clone), tl_utils.repeat_along_head_dimension(x, 5, clone)
        assert torch.equal(mine, theirs) and mine.shape == (2, 3, 5, 4)
        # a copy owns its storage; without clone_tensor both libraries hand back a view of x
        assert (mine.data_ptr() == x.data_ptr()) == (theirs.data_ptr() == x.data_ptr()) == (not clone)


@pytest.mark.parametrize("broadcast", [True, False])
def test_composition_scores_and_corner(broadcast):
    gen = torch.Generator().manual_seed(1)
    shapes = ((3, 6, 2), (3, 2, 5), (4, 5, 2), (4, 2, 6)) if broadcast else ((3, 6, 2), (3, 2, 5), (3, 5, 2), (3, 2, 6))
    a, b, c, d = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes)
    mine = utils.composition_scores(FactoredMatrix(a, b), FactoredMatrix(c, d), broadcast_dims=broadcast)
    theirs = tl_utils.composition_scores(TLFactored(a, b), TLFactored(c, d), broadcast_dims=broadcast)
    assert mine.shape == theirs.shape == ((3, 4) if broadcast else (3,))
    assert torch.allclose(mine, theirs, atol=1e-12)
    # hand reference: the dense products
    left, right = (a @ b)[:, None] if broadcast else a @ b, (c @ d)[None] if broadcast else c @ d
    dense = (left @ right).norm(dim=(-2, -1)) / left.norm(dim=(-2, -1)) / right.norm(dim=(-2, -1))
    assert torch.allclose(mine, dense, atol=1e-12)
    assert torch.equal(utils.get_matrix_corner(FactoredMatrix(a, b), 2), tl_utils.get_matrix_corner(TLFactored(a, b), 2))


def test_nested_attrs(bundled):
    ours, bridge, _ = bundled
    for path in ("blocks.0.attn.W_Q", "blocks.1.mlp.W_in", "W_E"):
        assert_same(utils.get_nested_attr(ours, path), tl_utils.get_nested_attr(bridge, path))
    assert utils.get_nested_attr(ours, "cfg.d_model") == tl_utils.get_nested_attr(bridge, "cfg.d_model")
    class Holder:
        pass
    outer = Holder()
    outer.inner = Holder()
    utils.set_nested_attr(outer, "inner.value", 3)
    utils.set_nested_attr(outer, "top", 4)
    assert outer.inner.value == 3 and outer.top == 4
