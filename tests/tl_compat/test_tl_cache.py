"""ActivationCache against transformer-lens 4.3.0: the residual-stream tools give the same stacks,
labels and shapes for every layer convention (None, -1, n_layers, an index), pos_slice form and norm."""

from __future__ import annotations

import pytest
import torch

from tl_pairs import assert_same

POS_SLICES = [None, -1, 2, [0, 3], (1, 4)]


@pytest.fixture(scope="module")
def caches(models):
    ours, bridge, tokens = models
    with torch.no_grad():
        logits, cache = ours.run_with_cache(tokens)
        tl_logits, tl_cache = bridge.run_with_cache(tokens)
    assert_same(logits, tl_logits)
    return ours, bridge, tokens, cache, tl_cache


def _same(ours_out, tl_out):
    if isinstance(tl_out, tuple):
        assert ours_out[1] == tl_out[1]
        ours_out, tl_out = ours_out[0], tl_out[0]
    assert_same(ours_out, tl_out)


@pytest.mark.parametrize("pos_slice", POS_SLICES)
def test_accumulated_resid(caches, pos_slice):
    ours, _, _, cache, tl_cache = caches
    n = ours.cfg.n_layers
    for layer in (None, -1, n, 1):
        for apply_ln in (False, True):
            for incl_mid in (False, True):
                kwargs = dict(layer=layer, apply_ln=apply_ln, incl_mid=incl_mid, pos_slice=pos_slice, return_labels=True)
                if "hook_resid_mid" not in str(list(cache.keys())) and incl_mid:
                    continue
                _same(cache.accumulated_resid(**kwargs), tl_cache.accumulated_resid(**kwargs))


@pytest.mark.parametrize("pos_slice", POS_SLICES)
def test_decompose_resid_and_apply_ln(caches, pos_slice):
    ours, _, _, cache, tl_cache = caches
    n = ours.cfg.n_layers
    for layer in (None, -1, n, 1, 0):
        for mode in ("all", "attn", "mlp"):
            for apply_ln in (False, True):
                kwargs = dict(layer=layer, mode=mode, apply_ln=apply_ln, pos_slice=pos_slice, return_labels=True)
                _same(cache.decompose_resid(**kwargs), tl_cache.decompose_resid(**kwargs))
    if not ours.cfg.parallel_attn_mlp:
        kwargs = dict(layer=1, mlp_input=True, apply_ln=True, pos_slice=pos_slice, return_labels=True)
        _same(cache.decompose_resid(**kwargs), tl_cache.decompose_resid(**kwargs))
    stack = tl_cache.decompose_resid(pos_slice=pos_slice)
    for layer in (None, -1, 0, 2):
        assert_same(cache.apply_ln_to_stack(stack, layer, pos_slice=pos_slice),
                    tl_cache.apply_ln_to_stack(stack, layer, pos_slice=pos_slice))


@pytest.mark.parametrize("pos_slice", POS_SLICES)
def test_stack_head_results_and_logit_attrs(caches, pos_slice):
    ours, _, tokens, cache, tl_cache = caches
    for layer in (-1, None, 2, 0):
        for incl_remainder in (False, True):
            kwargs = dict(layer=layer, incl_remainder=incl_remainder, apply_ln=True, pos_slice=pos_slice, return_labels=True)
            _same(cache.stack_head_results(**kwargs), tl_cache.stack_head_results(**kwargs))
    stack = tl_cache.decompose_resid(pos_slice=pos_slice)
    answer, wrong = tokens[:, -1], tokens[:, 1]
    assert_same(cache.logit_attrs(stack, answer, wrong, pos_slice=pos_slice),
                tl_cache.logit_attrs(stack, answer, wrong, pos_slice=pos_slice))
    assert_same(cache.logit_attrs(stack, 5, pos_slice=pos_slice), tl_cache.logit_attrs(stack, 5, pos_slice=pos_slice))


def test_neuron_and_full_decompositions(caches):
    ours, _, _, cache, tl_cache = caches
    direction = torch.randn(ours.cfg.d_model, generator=torch.Generator().manual_seed(0))
    for kwargs in (dict(layer=2), dict(layer=-1, pos_slice=-1, neuron_slice=(0, 5), incl_remainder=True),
                   dict(layer=1, apply_ln=True, incl_remainder=True, pos_slice=[1, 2]),
                   dict(layer=None, project_output_onto=direction, pos_slice=-1, neuron_slice=3)):
        _same(cache.stack_neuron_results(return_labels=True, **kwargs), tl_cache.stack_neuron_results(return_labels=True, **kwargs))
    assert_same(cache.get_neuron_results(1, neuron_slice=[1, 4], pos_slice=2), tl_cache.get_neuron_results(1, neuron_slice=[1, 4], pos_slice=2))
    for kwargs in (dict(), dict(layer=1, expand_neurons=False), dict(layer=-1, apply_ln=True, pos_slice=-1),
                   dict(layer=1, mlp_input=not ours.cfg.parallel_attn_mlp, expand_neurons=False, apply_ln=True)):
        _same(cache.get_full_resid_decomposition(return_labels=True, **kwargs),
              tl_cache.get_full_resid_decomposition(return_labels=True, **kwargs))
    full = cache.get_full_resid_decomposition(pos_slice=-1)
    assert_same(full.sum(0), cache["resid_post", -1][:, -1], rel=1e-4)
    for name, layer in (("pattern", -1), ("resid_pre", None), ("z", 2)):
        assert_same(cache.stack_activation(name, layer), tl_cache.stack_activation(name, layer))


def test_batch_dim_tools_and_run_with_cache_options(models):
    ours, bridge, tokens = models
    names = ["blocks.1.attn.hook_pattern", "blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    for pos_slice in (-1, [0, 2], (1, 5)):
        _, cache = ours.run_with_cache(tokens, names_filter=names, pos_slice=pos_slice)
        _, tl_cache = bridge.run_with_cache(tokens, names_filter=names, pos_slice=pos_slice)
        for name in names:
            assert_same(cache[name], tl_cache[name])
    _, cache = ours.run_with_cache(tokens[:1], remove_batch_dim=True)
    _, tl_cache = bridge.run_with_cache(tokens[:1], remove_batch_dim=True)
    assert not cache.has_batch_dim and not tl_cache.has_batch_dim
    assert_same(cache["pattern", 1], tl_cache["pattern", 1])
    assert_same(cache.accumulated_resid(apply_ln=True, pos_slice=-1), tl_cache.accumulated_resid(apply_ln=True, pos_slice=-1))

    _, cache = ours.run_with_cache(tokens)
    _, tl_cache = bridge.run_with_cache(tokens)
    for batch_slice in (1, [1], (0, 1)):
        one, tl_one = cache.apply_slice_to_batch_dim(batch_slice), tl_cache.apply_slice_to_batch_dim(batch_slice)
        assert one.has_batch_dim == tl_one.has_batch_dim
        assert_same(one["resid_post", -1], tl_one["resid_post", -1])
    _, cache = ours.run_with_cache(tokens[:1])
    _, tl_cache = bridge.run_with_cache(tokens[:1])
    assert cache.remove_batch_dim() is cache and tl_cache.remove_batch_dim() is tl_cache  # in place, both
    assert_same(cache["z", 0], tl_cache["z", 0])
    cache.compute_head_results()
    tl_cache.compute_head_results()
    assert_same(cache["result", 1], tl_cache["result", 1])


def test_use_attn_result_caches_head_results(models):
    ours, bridge, tokens = models
    ours.set_use_attn_result(True)
    bridge.set_use_attn_result(True)
    try:
        _, cache = ours.run_with_cache(tokens)
        _, tl_cache = bridge.run_with_cache(tokens)
        assert "blocks.0.attn.hook_result" in cache.cache_dict
        assert_same(cache["result", 0], tl_cache["result", 0])
    finally:
        ours.set_use_attn_result(False)
        bridge.set_use_attn_result(False)
    _, cache = ours.run_with_cache(tokens)
    assert "blocks.0.attn.hook_result" not in cache.cache_dict


def test_unembed_input_and_autodiff_toggle(caches):
    ours, _, _, cache, tl_cache = caches
    assert_same(cache["unembed.hook_in"], tl_cache["unembed.hook_in"])
    for mode in (False, True):
        cache.toggle_autodiff(mode)
        mine = torch.is_grad_enabled()
        tl_cache.toggle_autodiff(mode)
        assert mine == torch.is_grad_enabled() == mode
