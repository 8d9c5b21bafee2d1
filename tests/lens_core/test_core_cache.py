"""ActivationCache: the residual stream decompositions add up, and attributions match the logits."""

import pytest
import torch

import hf_tiny
from lens_core import HookedTransformer


@pytest.fixture(scope="module", params=["folded", "unfolded"])
def run(request):
    folded = request.param == "folded"
    model = HookedTransformer.from_hf_model(hf_tiny.gpt2(), fold_ln=folded, center_writing_weights=folded,
                                            center_unembed=folded, fold_value_biases=folded)
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(5))
    logits, cache = model.run_with_cache(tokens)
    return model, tokens, logits, cache


def test_decompositions_sum_to_the_residual_stream(run):
    model, _, _, cache = run
    final = cache["resid_post", -1]
    assert torch.allclose(cache.decompose_resid().sum(0), final, atol=1e-4)
    stack, labels = cache.decompose_resid(layer=2, return_labels=True)
    assert labels == ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    assert torch.allclose(stack.sum(0), cache["resid_pre", 2], atol=1e-4)
    heads, head_labels = cache.stack_head_results(return_labels=True, incl_remainder=True)
    assert head_labels[0] == "L0H0" and head_labels[-1] == "remainder" and heads.shape[0] == 3 * 4 + 1
    assert torch.allclose(heads.sum(0), final, atol=1e-4)
    acc, acc_labels = cache.accumulated_resid(return_labels=True, incl_mid=True)
    assert acc_labels[:3] == ["0_pre", "0_mid", "1_pre"] and acc_labels[-1] == "final_post"
    assert torch.equal(acc[-1], final)


def test_logit_attributions_add_up_to_the_logit(run):
    model, tokens, logits, cache = run
    answer = tokens[:, -1]  # any token id per batch item
    stack = cache.decompose_resid(pos_slice=-1)  # an integer position drops the axis: [component, batch, d_model]
    attrs = cache.logit_attrs(stack, answer, pos_slice=-1)  # [component, batch]
    # What no component owns: the final norm's bias through W_U, and b_U.
    bias = model.b_U[answer]
    if model.ln_final.has_weights:
        bias = bias + model.ln_final.b @ model.W_U[:, answer]
    expected = logits[torch.arange(2), -1, answer]
    assert torch.allclose(attrs.sum(0) + bias, expected, atol=1e-4)


def test_apply_ln_to_stack_reproduces_the_final_norm(run):
    model, _, _, cache = run
    normalized = cache.apply_ln_to_stack(cache.decompose_resid()).sum(0)
    if model.ln_final.has_weights:
        normalized = normalized + model.ln_final.b
    reference = model.ln_final(cache["resid_post", -1])
    assert torch.allclose(normalized, reference, atol=1e-4)


def test_shorthand_and_missing_keys(run):
    model, _, _, cache = run
    assert torch.equal(cache["resid_post", -1], cache["blocks.2.hook_resid_post"])
    assert ("pattern", 0) in cache and ("result", 0) not in cache
    with pytest.raises(KeyError, match="left out by names_filter"):
        cache["result", 0]
    assert cache.to("cpu")["z", 1].shape == (2, 8, 4, 8)
