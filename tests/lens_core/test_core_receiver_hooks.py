"""Receivers' inputs as hook points: per-head q/k/v inputs and the MLP input (edge-level patching)."""

import functools

import hf_tiny
import pytest
import torch

from lens_core import HookedTransformer


@functools.lru_cache(maxsize=None)
def tiny(family: str, fold: bool = True) -> HookedTransformer:
    return HookedTransformer.from_hf_model(hf_tiny.FAMILIES[family](), fold_ln=fold)


def random_tokens(n_pos: int, seed: int, batch: int = 1) -> torch.Tensor:
    return torch.randint(1, hf_tiny.VOCAB, (batch, n_pos), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_split_path_reproduces_the_fused_forward(family):
    model = tiny(family)
    tokens = random_tokens(7, seed=1, batch=2)
    plain = model(tokens)
    seen = {}

    def keep(x, hook):
        seen[hook.name] = x.shape

    names = ["blocks.1.hook_q_input", "blocks.1.hook_k_input", "blocks.1.hook_v_input", "blocks.1.hook_mlp_in"]
    split = model.run_with_hooks(tokens, fwd_hooks=[(n, keep) for n in names])
    torch.testing.assert_close(split, plain, atol=1e-5, rtol=1e-5)
    cfg = model.cfg
    assert seen["blocks.1.hook_q_input"] == (2, 7, cfg.n_heads, cfg.d_model)
    assert seen["blocks.1.hook_k_input"] == (2, 7, cfg.n_key_value_heads, cfg.d_model)
    assert seen["blocks.1.hook_mlp_in"] == (2, 7, cfg.d_model)


def test_one_heads_key_input_changes_only_that_head():
    """Replacing head 2's key input by another residual equals recomputing that head's keys by hand."""
    model = tiny("gpt2", fold=False)
    tokens, other = random_tokens(6, seed=2), random_tokens(6, seed=3)
    _, other_cache = model.run_with_cache(other, names_filter="blocks.1.hook_resid_pre")
    source = other_cache["blocks.1.hook_resid_pre"]

    def swap(x, hook):
        x = x.clone()
        x[:, :, 2] = source
        return x

    z_names = "blocks.1.attn.hook_z"
    keep = {}
    with model.hooks(fwd_hooks=[("blocks.1.hook_k_input", swap), (z_names, lambda x, h: keep.__setitem__("z", x))]):
        model(tokens)

    # By hand: keys of head 2 from the other prompt's normalized residual, everything else clean.
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_k", "blocks.1.attn.hook_q", "blocks.1.attn.hook_v"])
    attn = model.blocks[1].attn
    k = cache["blocks.1.attn.hook_k"].clone()
    k[0, :, 2] = model.blocks[1].ln1(source[0]) @ attn.W_K[2] + attn.b_K[2]

    def set_k(x, hook):
        return k

    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_k", set_k), (z_names, lambda x, h: keep.__setitem__("z_hand", x))]):
        model(tokens)
    torch.testing.assert_close(keep["z"], keep["z_hand"], atol=1e-5, rtol=1e-5)


def test_hook_order_lists_receiver_inputs_in_forward_order():
    names = [p.name for p in tiny("gpt2").hook_points() if p.name.startswith("blocks.0.")]
    assert names.index("blocks.0.hook_resid_pre") < names.index("blocks.0.hook_q_input") < names.index("blocks.0.ln1.hook_scale")
    assert names.index("blocks.0.hook_resid_mid") < names.index("blocks.0.hook_mlp_in") < names.index("blocks.0.ln2.hook_scale")
