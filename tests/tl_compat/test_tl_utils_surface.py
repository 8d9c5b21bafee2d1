"""The rest of the utilities and FactoredMatrix surface against transformer-lens 4.3.0: get_act_name over
every short name, layer type and packed form; FactoredMatrix products that broadcast leading dims on
either side, scalar tensors on either side, Ellipsis indexing, batched spectra and norms."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import FactoredMatrix as TLFactoredMatrix
from transformer_lens import utilities as tl_utils

from lens_core import utils
from lens_core.factored_matrix import FactoredMatrix
from tl_pairs import assert_same

SHORT = ("k v q z rot_k rot_q result pattern attn_scores pre post mid pre_linear resid_pre resid_mid resid_post attn_out "
         "mlp_out attn_in mlp_in q_input k_input v_input embed pos_embed scale normalized attn attn_logits key query value "
         "mlp_pre mlp_mid mlp_post").split()
LAYER_TYPES = (None, "a", "m", "b", "block", "blocks", "attention", "attn", "mlp", "ln1", "ln2")


def _hook_names(n_layers=4):
    """Every hook point name a TransformerLens HookedTransformer can have."""
    names = {"hook_embed", "hook_pos_embed", "hook_tokens", "ln_final.hook_scale", "ln_final.hook_normalized"}
    for l in range(n_layers):
        names |= {f"blocks.{l}.attn.hook_{a}" for a in "k v q z rot_k rot_q result pattern attn_scores".split()}
        names |= {f"blocks.{l}.mlp.hook_{m}" for m in ("pre", "post", "mid", "pre_linear")}
        names |= {f"blocks.{l}.hook_{b}" for b in "resid_pre resid_mid resid_post attn_out mlp_out attn_in mlp_in q_input k_input v_input".split()}
        names |= {f"blocks.{l}.{ln}.hook_{s}" for ln in ("ln1", "ln2") for s in ("scale", "normalized")}
    return names


def _call(fn, *args):
    try:
        return fn(*args)
    except (ValueError, KeyError):
        return None


def test_get_act_name_everywhere():
    """Wherever TransformerLens's answer is a real hook name, ours is the same. Where its answer names no hook
    point (it builds strings blindly: 'attn.hook_k' for a missing layer, 'blocks.0.mlp.hook_resid_pre'), ours
    raises a ValueError or, for a packed form its regex misses ('rot_k3'), gives the real name."""
    valid, cases = _hook_names(), 0
    calls = [(n, layer, lt) for n in SHORT for layer in (None, 0, 3, "2") for lt in LAYER_TYPES]
    calls += [(f"{n}3{suffix}",) for n in SHORT for suffix in ("", "ln1", "ln2", "a", "m")]
    for args in calls:
        theirs, mine = _call(tl_utils.get_act_name, *args), _call(utils.get_act_name, *args)
        if theirs in valid:
            assert mine == theirs, args
            cases += 1
        assert mine is None or mine in valid, (args, mine)
    assert cases > 200


def _fm(*lead, ldim=6, mdim=3, rdim=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A, B = torch.randn(*lead, ldim, mdim, generator=gen), torch.randn(*lead, mdim, rdim, generator=gen)
    return FactoredMatrix(A, B), TLFactoredMatrix(A, B)


def _same(mine, ref):
    if isinstance(ref, TLFactoredMatrix):
        assert isinstance(mine, FactoredMatrix) and mine.mdim == ref.mdim and tuple(mine.shape) == tuple(ref.shape)
        mine, ref = mine.AB, ref.AB
    assert_same(mine, ref)


@pytest.mark.parametrize("lead", [(), (2,), (4, 2)])
def test_broadcast_products_on_both_sides(lead):
    ours, theirs = _fm(*lead)
    gen = torch.Generator().manual_seed(1)
    for shape in ((3, 1, 1, 5, 4), (1, 5, 2), (5, 9), (5,)):
        other = torch.randn(*shape, generator=gen)
        _same(ours @ other, theirs @ other)
    for shape in ((3, 1, 1, 7, 6), (1, 2, 6), (6,), (8, 6)):
        other = torch.randn(*shape, generator=gen)
        _same(other @ ours, other @ theirs)
    left, tl_left = _fm(3, 1, 1, ldim=4, mdim=2, rdim=6, seed=3)  # [3, 1, 1, 4, 6] @ [..., 6, 5]
    _same(left @ ours, tl_left @ theirs)
    right, tl_right = _fm(1, ldim=5, mdim=4, rdim=7, seed=4)
    _same(ours @ right, theirs @ tl_right)
    for scalar in (2.5, torch.tensor(-1.5), torch.tensor([3.0])):
        _same(ours * scalar, theirs * scalar)
        _same(scalar * ours, scalar * theirs)
    with pytest.raises((ValueError, AssertionError)):
        ours * torch.ones(2)
    with pytest.raises((ValueError, AssertionError, RuntimeError)):
        ours @ torch.randn(4, 4)
    assert ours.ndim == theirs.ndim == len(lead) + 2


def test_ellipsis_indexing_and_batched_spectra():
    ours, theirs = _fm(2, 3, ldim=6, mdim=3, rdim=6)
    for index in ((..., 1, 2), (..., slice(0, 4), slice(1, 3)), (1, ...), (0, ..., 2), (Ellipsis,)):
        mine, ref = ours[index], theirs[index]
        assert tuple(mine.shape) == tuple(ref.shape), index
        assert_same(mine.AB, ref.AB)
    with pytest.raises(IndexError):
        ours[..., ...]
    assert_same(ours.S, theirs.S)
    assert_same(ours.norm(), theirs.norm())
    assert_same(ours.collapse_l().norm(dim=(-2, -1)), theirs.collapse_l().norm(dim=(-2, -1)))
    assert_same(ours.collapse_r().norm(dim=(-2, -1)), theirs.collapse_r().norm(dim=(-2, -1)))
    mine_eig, ref_eig = ours.eigenvalues, theirs.eigenvalues
    assert mine_eig.shape == ref_eig.shape == (2, 3, 3)
    assert_same(mine_eig.abs().sort(-1).values, ref_eig.abs().sort(-1).values, rel=1e-4)
    assert_same(ours.unsqueeze(1).AB, theirs.unsqueeze(1).AB)
    _same(utils.get_corner(ours, 2), tl_utils.get_corner(theirs, 2))


def test_remaining_helpers():
    x = torch.randn(1, 4, 3)
    assert torch.equal(utils.remove_batch_dim(x), tl_utils.remove_batch_dim(x))
    y = torch.randn(2, 4, 3)
    assert torch.equal(utils.remove_batch_dim(y), tl_utils.remove_batch_dim(y))
    for value in ([1, 2], (3, 4), 5, 2.5, torch.arange(3)):
        assert (utils.to_numpy(value) == tl_utils.to_numpy(value)).all()
    for spec in (2, (1, 3), (0, 4, 2), [0, 2], torch.tensor([1, 3]), None, slice(1, None)):
        assert torch.equal(utils.Slice(spec).apply(y, 1), tl_utils.Slice(spec).apply(y, 1)), spec
