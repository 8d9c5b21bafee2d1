import pytest
import torch

from lens_core.experiments import DLARequest, direct_logit_attribution

from exp_tiny import HF, random_tokens, tiny

CASES = [(family, fold) for family in ("gpt2", "neox", "llama") for fold in (True, False)]


def _hf_logit_diff(family, tokens, pos, answer, wrong):
    with torch.no_grad():
        logits = HF[family](0)(tokens).logits[0, pos]
    return float(logits[answer] - logits[wrong])


@pytest.mark.parametrize("family,fold", CASES)
def test_components_and_biases_sum_to_the_real_logit_diff(family, fold):
    model = tiny(family, fold)
    tokens = random_tokens(7, seed=5)
    req = DLARequest(tokens=tuple(tokens[0].tolist()), answer=11, wrong_answer=23, position=-2, neuron_layer=1)
    result = direct_logit_attribution(model, req)
    actual = _hf_logit_diff(family, tokens, -2, 11, 23)  # independent: the transformers forward
    assert result.logit_diff == pytest.approx(actual, abs=1e-4)
    assert float(result.decomposed.sum()) + result.bias_total == pytest.approx(actual, abs=1e-4)
    assert float(result.accumulated[-1]) + result.bias_total == pytest.approx(actual, abs=1e-4)
    # Accumulated rows step by exactly one layer's attn + mlp.
    start = 2 if "pos_embed" in result.component_labels else 1
    torch.testing.assert_close(result.accumulated[0], result.decomposed[:start].sum(), atol=1e-5, rtol=0)
    steps = result.accumulated[1:] - result.accumulated[:-1]
    torch.testing.assert_close(steps, result.decomposed[start:].reshape(-1, 2).sum(-1), atol=1e-5, rtol=0)


def _frozen_projection(model, cache, vectors, pos, direction):
    """Hand computation: centre (LN), divide by the cached final scale, times the norm weight, dot the direction."""
    x = vectors
    if model.cfg.normalization_type in ("LN", "LNPre"):
        x = x - x.mean(-1, keepdim=True)
    x = x / cache["ln_final.hook_scale"][0, pos]
    if getattr(model.ln_final, "w", None) is not None:
        x = x * model.ln_final.w
    return x @ direction


@pytest.mark.parametrize("family,fold", [("gpt2", False), ("llama", True)])
def test_heads_and_neurons_by_hand(family, fold):
    model = tiny(family, fold)
    tokens = random_tokens(7, seed=6)
    pos, layer = 4, 2
    result = direct_logit_attribution(
        model, DLARequest(tokens=tuple(tokens[0].tolist()), answer=3, wrong_answer=9, position=pos, neuron_layer=layer, top_k_neurons=5)
    )
    _, cache = model.run_with_cache(tokens)
    direction = model.W_U[:, 3] - model.W_U[:, 9]
    for l in range(model.cfg.n_layers):
        result_l = torch.einsum("he,hed->hd", cache["z", l][0, pos], model.blocks[l].attn.W_O)
        torch.testing.assert_close(result.heads[l], _frozen_projection(model, cache, result_l, pos, direction), atol=1e-5, rtol=1e-4)
    post = cache["post", layer][0, pos]
    by_hand = torch.stack([_frozen_projection(model, cache, post[i] * model.blocks[layer].mlp.W_out[i], pos, direction)
                           for i in range(post.shape[0])])
    torch.testing.assert_close(result.neurons, by_hand, atol=1e-5, rtol=1e-4)
    assert set(result.top_neurons.tolist()) == set(by_hand.abs().topk(5).indices.tolist())
    assert result.head_labels[:2] == ["L0H0", "L0H1"]


def test_dla_validation():
    model = tiny("gpt2")
    with pytest.raises(ValueError, match="neuron_layer"):
        direct_logit_attribution(model, DLARequest(tokens=(1, 2, 3), answer=1, neuron_layer=3))
    with pytest.raises(ValueError, match="position"):
        direct_logit_attribution(model, DLARequest(tokens=(1, 2, 3), answer=1, position=5))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        direct_logit_attribution(model, DLARequest(tokens=(1, 2, 3), answer=999))
