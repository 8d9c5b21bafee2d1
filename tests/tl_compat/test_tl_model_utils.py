"""Model helpers and lens_core.utils against transformer-lens 4.3.0 on the same weights and tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import utilities as tl_utils

from lens_core import utils
from tl_pairs import assert_same


def test_token_helpers(bundled):
    ours, bridge, _ = bundled
    text = "The cat sat on the mat and the cat ran"
    pieces = [t for t in ours.to_str_tokens(text)[1:] if len(ours.to_tokens(t, prepend_bos=False)[0]) == 1]
    repeated = next(t for t in pieces if pieces.count(t) > 1)
    for token in (repeated, pieces[0], int(ours.to_tokens(text)[0, 3])):
        for mode in ("first", "last"):
            assert ours.get_token_position(token, text, mode=mode) == bridge.get_token_position(token, text, mode=mode)
    tokens = ours.to_tokens(text)
    assert ours.get_token_position(repeated, tokens) == bridge.get_token_position(repeated, tokens)
    for token in (0, 262, 1000):
        assert ours.to_single_str_token(token) == bridge.to_single_str_token(token)
    for tokens in (repeated, 262, torch.tensor(5), torch.tensor([3, 4, 5]), torch.tensor([[3, 4], [5, 6]])):
        assert_same(ours.tokens_to_residual_directions(tokens), bridge.tokens_to_residual_directions(tokens))


def test_input_to_embed_and_weights(models):
    ours, bridge, tokens = models
    mine, theirs = ours.input_to_embed(tokens), bridge.input_to_embed(tokens)
    assert_same(mine[0], theirs[0])
    assert torch.equal(mine[1], theirs[1]) and mine[2] is None and theirs[2] is None
    for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_O", "W_in", "W_out", "b_in", "W_E", "W_U", "b_U"):
        try:
            theirs = getattr(bridge, name)
        except AttributeError:  # the bridge has no stacked bias for bias-free models; ours holds zeros
            assert not getattr(ours, name).any()
            continue
        if name in ("W_K", "W_V", "b_K") and ours.cfg.n_kv_groups > 1:
            # Grouped-query models: the stacked views repeat each kv head for its query heads (as
            # HookedTransformer did); the bridge keeps the kv heads.
            theirs = theirs.repeat_interleave(ours.cfg.n_kv_groups, dim=1)
        assert_same(getattr(ours, name), theirs)
    assert_same(ours.OV.AB, bridge.OV.AB)
    assert_same(ours.QK.AB, bridge.QK.AB)
    for layer, mlp_input in ((0, False), (1, True), (ours.cfg.n_layers, False)):
        if mlp_input and ours.cfg.parallel_attn_mlp:
            continue
        assert_same(ours.accumulated_bias(layer, mlp_input), bridge.accumulated_bias(layer, mlp_input))


def test_test_prompt_prints_the_same_report(bundled, capsys):
    ours, bridge, _ = bundled
    for answer in (" mat", ["mat", "dog", " cat"]):
        utils.test_prompt("The cat sat on the", answer, ours, top_k=5)
        mine = capsys.readouterr().out
        tl_utils.test_prompt("The cat sat on the", answer, bridge, top_k=5)
        theirs = capsys.readouterr().out
        assert mine.split() == theirs.split()  # same text (their rich console may wrap long lines)


def test_losses_masks_and_slices(bundled):
    ours, bridge, _ = bundled
    tokens = ours.to_tokens(["a b c d e", "a b"])
    logits = ours(tokens)
    for padding_side in ("right", "left"):
        ours.tokenizer.padding_side = padding_side
        padded = ours.to_tokens(["a b c d e", "a b"], padding_side=padding_side)
        mask = utils.get_attention_mask(ours.tokenizer, padded, True)
        assert torch.equal(mask, tl_utils.get_attention_mask(ours.tokenizer, padded, True))
    ours.tokenizer.padding_side = "right"
    mask = utils.get_attention_mask(ours.tokenizer, tokens, True)
    for per_token in (False, True):
        for attention_mask in (None, mask):
            assert_same(utils.lm_cross_entropy_loss(logits, tokens, attention_mask, per_token),
                        tl_utils.lm_cross_entropy_loss(logits, tokens, attention_mask, per_token))
    assert_same(utils.lm_accuracy(logits, tokens).float(), tl_utils.lm_accuracy(logits, tokens).float())
    x = torch.arange(80.0).reshape(4, 4, 5)
    for spec in (None, 2, -1, (1, 3), (0, 4, 2), [0, 2], torch.tensor([3, 1]), slice(1, None)):
        for dim in (0, 1, -1):
            if isinstance(spec, int) and spec >= x.shape[dim]:
                continue
            assert_same(utils.Slice(spec).apply(x, dim), tl_utils.Slice(spec).apply(x, dim), rel=0)
        assert utils.Slice.unwrap(spec).apply(x, 1).dim() == tl_utils.Slice.unwrap(spec).apply(x, 1).dim()
    assert np.array_equal(utils.Slice((1, 4)).indices(6), tl_utils.Slice((1, 4)).indices(6))
    assert np.array_equal(utils.to_numpy(x), tl_utils.to_numpy(x))
    assert torch.equal(utils.get_corner(x, 2), tl_utils.get_corner(x, 2))


@pytest.mark.parametrize("args", [("k6",), ("scale4ln1",), ("pre5",), ("embed",), ("pos_embed",), ("scale",),
                                  ("normalized", 3, "ln2"), ("k", 6, "a"), ("pattern", 2), ("attn", 1), ("resid_pre", 0),
                                  ("mlp_out", 3), ("post", 1, "m"), ("attn_scores", 0), ("rot_q", 2), ("z", 1, "attn"),
                                  ("blocks.0.attn.hook_z",), ("hook_embed",), ("q_input", 1), ("attn_in", 0)])
def test_get_act_name_forms(args):
    assert utils.get_act_name(*args) == tl_utils.get_act_name(*args)
