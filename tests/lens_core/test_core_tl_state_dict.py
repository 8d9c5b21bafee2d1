"""model.load_state_dict takes a TransformerLens HookedTransformer state dict: written here by hand from the
TL-shaped views (W_Q [head, d_model, d_head], unembed.W_U [d_model, d_vocab], the mask/IGNORE buffers),
loaded into a fresh model, it gives the same logits."""

import torch

from lens_core import HookedTransformer, HookedTransformerConfig


def test_tl_state_dict_round_trip():
    cfg = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=30, n_ctx=10, attn_only=True, normalization_type=None)
    source = HookedTransformer(HookedTransformerConfig(**cfg, seed=1))
    tl = {"embed.W_E": source.W_E, "pos_embed.W_pos": source.W_pos, "unembed.W_U": source.W_U, "unembed.b_U": source.b_U}
    for layer, block in enumerate(source.blocks):
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            tl[f"blocks.{layer}.attn.{name}"] = getattr(block.attn, name).clone()
        tl[f"blocks.{layer}.attn.mask"] = torch.ones(10, 10).tril().bool()
        tl[f"blocks.{layer}.attn.IGNORE"] = torch.tensor(-1e5)
    target = HookedTransformer(HookedTransformerConfig(**cfg, seed=2))
    tokens = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(target(tokens), source(tokens))
    target.load_state_dict(tl)
    assert torch.equal(target(tokens), source(tokens))
