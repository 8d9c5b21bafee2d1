"""positional_embedding_type="shortformer" against a hand-written forward pass: positions added to the
query and key inputs of every layer, never to the values or the residual stream; hook_pos_embed's output
is what the layers use; split runs and padded batches behave as for the other models."""

from __future__ import annotations

import torch

from lens_core import HookedTransformer, HookedTransformerConfig


def _model(**extra):
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=30, n_ctx=10, attn_only=True,
                                  normalization_type=None, positional_embedding_type="shortformer", seed=1, **extra)
    return HookedTransformer(cfg)


def _by_hand(model, tokens, W_pos=None):
    W_pos = model.W_pos if W_pos is None else W_pos
    n = tokens.shape[1]
    x = model.W_E[tokens]
    pos = W_pos[:n]
    causal = torch.ones(n, n).tril().bool()
    for block in model.blocks:
        a = block.attn
        q = torch.einsum("bpd,hde->bphe", x + pos, a.W_Q) + a.b_Q
        k = torch.einsum("bpd,hde->bphe", x + pos, a.W_K) + a.b_K
        v = torch.einsum("bpd,hde->bphe", x, a.W_V) + a.b_V
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / 8**0.5
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        x = x + torch.einsum("bqhe,hed->bqd", z, a.W_O) + a.b_O
    return x @ model.W_U + model.b_U


@torch.no_grad()
def test_shortformer_forward_equals_the_hand_computation():
    model = _model()
    tokens = torch.randint(0, 30, (3, 9), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(tokens), _by_hand(model, tokens), atol=1e-5)
    _, cache = model.run_with_cache(tokens)
    assert torch.equal(cache["blocks.0.hook_resid_pre"], model.W_E[tokens])  # no positions in the residual
    assert torch.allclose(cache["hook_pos_embed"], model.W_pos[:9].expand(3, -1, -1))
    parts, labels = cache.decompose_resid(return_labels=True)
    assert "pos_embed" not in labels and torch.allclose(parts.sum(0), cache["resid_post", 1], atol=1e-5)
    # a hook on hook_pos_embed changes what every layer adds
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[("hook_pos_embed", lambda x, hook: torch.zeros_like(x))])
    assert torch.allclose(zeroed, _by_hand(model, tokens, torch.zeros_like(model.W_pos)), atol=1e-5)
    assert (zeroed - model(tokens)).abs().max() > 1e-3
    # split runs recompute the positions from W_pos
    resid = model(tokens, stop_at_layer=1)
    assert torch.equal(model(resid, start_at_layer=1), model(tokens))


@torch.no_grad()
def test_shortformer_left_padding_and_split_inputs():
    model = _model()
    rows = [[3, 4, 5, 6, 7, 8], [9, 10, 11]]
    tokens = torch.tensor([rows[0], [0, 0, 0] + rows[1]])
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    out = model(tokens, attention_mask=mask)
    assert torch.allclose(out[1, 3:], model(torch.tensor([rows[1]]))[0], atol=1e-5)
    # the per-head receiver inputs (edge patching) take the same positions
    hooked = model.run_with_hooks(tokens[:1], fwd_hooks=[("blocks.1.hook_q_input", lambda x, hook: x)])
    assert torch.allclose(hooked, model(tokens[:1]), atol=1e-5)
