"""Hook points: names, shapes, caching, replacement, scoping, partial runs."""

import pytest
import torch

import hf_tiny
from lens_core import HookedTransformer

BATCH, N_POS = 2, 7


def _expected_shape(name, cfg):
    h, kv, e, d, m = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_model, cfg.d_mlp
    last = name.rsplit(".", 1)[-1]
    shapes = {
        "hook_q": (BATCH, N_POS, h, e), "hook_rot_q": (BATCH, N_POS, h, e), "hook_z": (BATCH, N_POS, h, e),
        "hook_k": (BATCH, N_POS, kv, e), "hook_v": (BATCH, N_POS, kv, e), "hook_rot_k": (BATCH, N_POS, kv, e),
        "hook_attn_scores": (BATCH, h, N_POS, N_POS), "hook_pattern": (BATCH, h, N_POS, N_POS),
        "hook_result": (BATCH, N_POS, h, d), "hook_pre": (BATCH, N_POS, m), "hook_post": (BATCH, N_POS, m),
        "hook_pre_linear": (BATCH, N_POS, m), "hook_scale": (BATCH, N_POS, 1),
    }
    return shapes.get(last, (BATCH, N_POS, d))


EXPECTED_NAMES = {
    "gpt2": {"hook_pos_embed", "blocks.0.hook_resid_mid", "blocks.0.attn.hook_result"},
    "neox": {"blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k"},
    "llama": {"blocks.0.mlp.hook_pre_linear", "blocks.0.attn.hook_rot_k", "blocks.0.hook_resid_mid"},
}


@pytest.mark.parametrize("family", sorted(hf_tiny.FAMILIES))
def test_every_hook_point_fires_once_with_documented_shape(family):
    model = HookedTransformer.from_hf_model(hf_tiny.FAMILIES[family](), fold_ln=False)
    seen = {}

    def record(tensor, hook):
        assert hook.name not in seen, f"{hook.name} fired twice"
        seen[hook.name] = tuple(tensor.shape)

    # The per-head q/k/v inputs switch their block to its per-head path (tests/lens_core/test_core_receiver_hooks.py).
    per_head = ("hook_q_input", "hook_k_input", "hook_v_input")
    model.run_with_hooks(torch.zeros(BATCH, N_POS, dtype=torch.long),
                         fwd_hooks=[(lambda name: not name.endswith(per_head), record)])
    assert set(seen) == {name for name in model.hook_dict if not name.endswith(per_head)}
    assert EXPECTED_NAMES.get(family, set()) <= set(seen)
    for layer in range(model.cfg.n_layers):
        for part in ("hook_resid_pre", "ln1.hook_scale", "ln2.hook_normalized", "attn.hook_pattern", "attn.hook_z",
                     "hook_attn_out", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"):
            assert f"blocks.{layer}.{part}" in seen
    assert "ln_final.hook_scale" in seen and "hook_embed" in seen
    for name, shape in seen.items():
        assert shape == _expected_shape(name, model.cfg), name
    if family == "neox":
        assert "blocks.0.hook_resid_mid" not in seen  # parallel attention + MLP has no mid residual


def test_run_with_cache_holds_exactly_what_hooks_see():
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2())
    tokens = torch.randint(0, 64, (BATCH, N_POS))
    seen = {}
    not_result = lambda name: not name.endswith(("hook_result", "hook_q_input", "hook_k_input", "hook_v_input"))  # noqa: E731
    model.run_with_hooks(tokens, fwd_hooks=[(not_result, lambda t, hook: seen.__setitem__(hook.name, t.clone()))])
    logits, cache = model.run_with_cache(tokens)
    assert "blocks.0.attn.hook_result" not in cache  # per-head results only when asked for
    assert set(cache.keys()) == set(seen)
    for name, tensor in cache.items():
        assert torch.equal(tensor, seen[name]), name
    assert torch.equal(cache["pattern", -1], seen["blocks.2.attn.hook_pattern"])
    assert torch.equal(cache["scale", 1, "ln2"], seen["blocks.1.ln2.hook_scale"])
    _, only = model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_result"])
    assert list(only.keys()) == ["blocks.1.attn.hook_result"]
    # Summed over heads plus b_O, the per-head results are the attention output.
    assert torch.allclose(only["blocks.1.attn.hook_result"].sum(2) + model.blocks[1].attn.b_O, cache["attn_out", 1], atol=1e-5)


def test_hooks_are_gone_after_the_call_even_when_a_hook_raises():
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2())
    tokens = torch.randint(0, 64, (1, 5))
    clean = model(tokens)

    def boom(tensor, hook):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", boom)])
    assert torch.equal(model(tokens), clean)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda t, h: t * 0)]):
        assert not torch.allclose(model(tokens), clean)
    assert torch.equal(model(tokens), clean)


def test_zero_ablating_a_head_equals_removing_its_output_weights():
    hf = hf_tiny.gpt2()
    model = HookedTransformer.from_hf_model(hf)
    tokens = torch.randint(0, 64, (BATCH, N_POS))

    def ablate_head_2(z, hook):
        z = z.clone()
        z[:, :, 2] = 0
        return z

    hooked = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", ablate_head_2)])
    reference = HookedTransformer.from_hf_model(hf)
    reference.blocks[1].attn.W_O.data[2] = 0  # independent route: the head writes nothing
    assert torch.allclose(hooked, reference(tokens), atol=1e-5)


def test_nested_hook_contexts_compose_in_order():
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2())
    order = []
    with model.hooks(fwd_hooks=[("hook_embed", lambda t, h: order.append("outer"))]):
        model.run_with_hooks(torch.zeros(1, 3, dtype=torch.long), fwd_hooks=[("hook_embed", lambda t, h: order.append("inner"))])
    assert order == ["outer", "inner"]


def test_start_and_stop_at_layer_split_the_forward_pass_exactly():
    model = HookedTransformer.from_hf_model(hf_tiny.llama())
    tokens = torch.randint(0, 64, (BATCH, N_POS))
    logits, cache = model.run_with_cache(tokens)
    resid = model(tokens, stop_at_layer=2)
    # (the cached run takes the explicit attention path, the plain run the fused kernel)
    assert torch.allclose(resid, cache["resid_pre", 2], atol=1e-5, rtol=1e-5)
    resumed = model(resid, start_at_layer=2)
    assert torch.allclose(resumed, logits, atol=1e-4, rtol=1e-5)
    loss = model(resid, start_at_layer=2, tokens=tokens, return_type="loss")
    assert torch.allclose(loss, model(tokens, return_type="loss"), atol=1e-5)


def test_backward_hooks_see_the_activation_gradient():
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2())
    tokens = torch.randint(0, 64, (1, 6))
    grads, acts = {}, {}

    def keep(tensor, hook):
        tensor.retain_grad()
        acts[hook.name] = tensor

    model.W_E.requires_grad_(True)
    try:
        with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", keep)],
                         bwd_hooks=[("blocks.1.hook_resid_post", lambda g, hook: grads.__setitem__(hook.name, g))]):
            model(tokens, return_type="loss").backward()
    finally:
        model.W_E.requires_grad_(False)
    assert torch.equal(grads["blocks.1.hook_resid_post"], acts["blocks.1.hook_resid_post"].grad)


def test_unknown_hook_name_is_a_clear_error():
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2())
    with pytest.raises(KeyError, match="no hook point named 'blocks.9.hook_resid_pre'"):
        model.run_with_hooks(torch.zeros(1, 3, dtype=torch.long), fwd_hooks=[("blocks.9.hook_resid_pre", lambda t, h: t)])


@pytest.mark.parametrize("family", sorted(hf_tiny.FAMILIES))
def test_a_block_resumed_from_cached_keys_and_values_matches_the_full_run(family):
    model = HookedTransformer.from_hf_model(hf_tiny.FAMILIES[family]())
    tokens = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(3))
    rotary = model.cfg.positional_embedding_type == "rotary"
    _, cache = model.run_with_cache(tokens)
    start = 4
    for layer in range(model.cfg.n_layers):
        keys = cache["rot_k" if rotary else "k", layer][:, :start]
        values = cache["v", layer][:, :start]
        block = model.blocks[layer]
        suffix = block(cache["resid_pre", layer][:, start:], past_kv=(keys, values))
        assert torch.allclose(suffix, cache["resid_post", layer][:, start:], atol=1e-5, rtol=1e-5), layer
        last = block(cache["resid_pre", layer][:, start:], past_kv=(keys, values), last_query_only=True)
        assert last.shape == (2, 1, model.cfg.d_model)
        assert torch.allclose(last, cache["resid_post", layer][:, -1:], atol=1e-5, rtol=1e-5), layer
