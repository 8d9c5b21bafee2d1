"""Attention-only models (``attn_only=True``) against transformer-lens 4.3.0's native attention-only model
(``TransformerBridge.boot_native``), in compatibility mode, on the same weights."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge
import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)

from lens_core import HookedTransformer
from lens_core.config import HookedTransformerConfig
from tl_pairs import assert_same

SHAPE = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=50, n_ctx=16)


@pytest.fixture(scope="module", params=[("LN", "LNPre"), (None, None)], ids=["LN", "no-norm"])
def attn_only_pair(request):
    theirs_norm, our_norm = request.param  # compatibility mode folds LN's weights: LNPre on our side
    bridge = TransformerBridge.boot_native(TransformerBridgeConfig.from_dict(
        dict(SHAPE, attn_only=True, normalization_type=theirs_norm, seed=0, act_fn="gelu_new", d_mlp=None)))
    bridge.enable_compatibility_mode(disable_warnings=True)
    # d_mlp left out, as TransformerLens's attention-only configs do
    ours = HookedTransformer(HookedTransformerConfig(**SHAPE, attn_only=True, normalization_type=our_norm))
    with torch.no_grad():
        for layer, block in enumerate(ours.blocks):
            attn = block.attn
            attn.W_QKV.copy_(torch.cat([getattr(bridge, w)[layer].permute(1, 0, 2).flatten(1) for w in ("W_Q", "W_K", "W_V")], dim=1))
            attn.b_QKV.copy_(torch.cat([getattr(bridge, b)[layer].flatten() for b in ("b_Q", "b_K", "b_V")]))
            attn.W_O.copy_(bridge.W_O[layer])
            attn.b_O.copy_(bridge.b_O[layer])
        ours.embed.W_E.copy_(bridge.W_E)
        ours.pos_embed.W_pos.copy_(bridge.W_pos)
        ours.unembed.weight.copy_(bridge.W_U.T if ours.unembed.weight.shape != bridge.W_U.shape else bridge.W_U)
        ours.unembed.b_U.copy_(bridge.b_U)
    ours._weights_hash = None
    return ours, bridge


def test_attn_only_forward_cache_and_hook_points(attn_only_pair):
    ours, bridge = attn_only_pair
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    logits, cache = ours.run_with_cache(tokens)
    their_logits, their_cache = bridge.run_with_cache(tokens)
    assert_same(logits, their_logits)
    for layer in range(2):
        for name in ("resid_pre", "attn_out", "resid_post", "pattern", "z"):
            assert_same(cache[name, layer], their_cache[name, layer])
    # neither side has MLP-side hook points in an attention-only model
    for side in (ours.hook_dict, bridge.hook_dict):
        assert not any(n.endswith(("hook_resid_mid", "hook_mlp_out", "mlp.hook_pre", "mlp.hook_post")) for n in side)
    assert ours.blocks[0].mlp is None and ours.blocks[0].ln2 is None and ours.cfg.d_mlp is None
    if ours.cfg.normalization_type is None:  # no norm hook points on either side
        for side in (ours.hook_dict, bridge.hook_dict):
            assert not any(n.endswith(("hook_scale", "hook_normalized")) for n in side)
    # the residual is embeddings plus attention outputs only
    total = cache["embed"] + cache["pos_embed"] + sum(cache["attn_out", l] for l in range(2))
    assert torch.allclose(total, cache["resid_post", 1], atol=1e-5)
    assert_same(ours.accumulated_bias(2), bridge.accumulated_bias(2))
