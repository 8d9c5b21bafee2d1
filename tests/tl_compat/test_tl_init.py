"""HookedTransformer(cfg) initialises as transformer-lens 4.3.0's native models do, for every init_mode:
the same seed gives the same weights (draw for draw) and the same logits; and lens_core.init_utils's
helpers give what transformer_lens.utilities.initialization_utils's give from the same generator state."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.model_bridge.sources.native import boot
from transformer_lens.utilities import initialization_utils as tl_init

from lens_core import HookedTransformer, HookedTransformerConfig, init_utils
from tl_pairs import assert_same

MODES = ["gpt2", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
BASE = dict(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=12, act_fn="gelu", seed=3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", [{}, {"attn_only": True, "d_mlp": None}, {"initializer_range": 0.5},
                                     {"normalization_type": "RMS", "gated_mlp": True, "act_fn": "silu"},
                                     {"positional_embedding_type": "rotary"}])
def test_same_seed_same_weights_as_native(mode, variant):
    spec = {**BASE, **variant, "init_mode": mode}
    if spec.get("attn_only"):
        spec.pop("d_mlp")
    theirs = boot(dict(spec))
    ours = HookedTransformer(HookedTransformerConfig(**spec))
    names = ["W_E", "W_Q", "W_K", "W_V", "W_O", "W_U", "b_Q", "b_O"]
    names += [] if spec.get("positional_embedding_type") == "rotary" else ["W_pos"]
    names += [] if spec.get("attn_only") else ["W_in", "W_out"] + (["W_gate"] if spec.get("gated_mlp") else [])
    for name in names:
        assert_same(getattr(ours, name), getattr(theirs, name), rel=0), name
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    # (Rotary: the native model rotates adjacent pairs (GPT-J's layout), ours rotate halves (GPT-NeoX's,
    # HookedTransformer's default, what every supported checkpoint uses): same weights, other logits.)
    if spec.get("positional_embedding_type") != "rotary":
        with torch.no_grad():
            assert_same(ours(tokens), theirs(tokens), rel=1e-5)
    # reproducible, and a different seed differs
    assert torch.equal(HookedTransformer(HookedTransformerConfig(**spec)).W_Q, ours.W_Q)
    assert not torch.equal(HookedTransformer(HookedTransformerConfig(**{**spec, "seed": 4})).W_Q, ours.W_Q)


def test_helpers_match_from_the_same_generator_state():
    shapes = [(7,), (5, 9), (3, 8, 4)]
    for shape in shapes:
        assert init_utils.calc_fan_in_and_fan_out(torch.empty(shape)) == tl_init.calc_fan_in_and_fan_out(torch.empty(shape))
        for ours, theirs, kwargs in (
            (init_utils.init_xavier_uniform_, tl_init.init_xavier_uniform_, {"gain": 0.7}),
            (init_utils.init_xavier_normal_, tl_init.init_xavier_normal_, {"gain": 1.3}),
            (init_utils.init_kaiming_uniform_, tl_init.init_kaiming_uniform_, {"nonlinearity": "leaky_relu", "a": 0.1}),
            (init_utils.init_kaiming_normal_, tl_init.init_kaiming_normal_, {"mode": "fan_out", "gain": 2.0}),
        ):
            torch.manual_seed(11)
            mine = ours(torch.empty(shape), **kwargs)
            torch.manual_seed(11)
            ref = theirs(torch.empty(shape), **kwargs)
            assert torch.equal(mine, ref), (ours.__name__, shape)
    with pytest.raises(ValueError):
        init_utils.calc_fan_in_and_fan_out(torch.empty(()))
    with pytest.raises(NotImplementedError):
        HookedTransformerConfig(**{**BASE, "init_mode": "muP"})
