"""Splicing transcoders into the bundled model, feature activations and steering, against hand-built references."""

from __future__ import annotations

import pytest
import torch
from features_support import default_model, random_set

from lens_core.features import FeaturesUnavailable
from lens_core.features.evaluate import evaluate_transcoders
from lens_core.features.splice import feature_activations, run_spliced, splice_hooks, steer

PROMPT = "def copy(self, other):\n    return self.data"


@pytest.fixture(scope="module")
def setup():
    model = default_model()
    return model, random_set(model), model.to_tokens([PROMPT, PROMPT.upper()])


def test_splice_with_error_term_is_exact(setup):
    model, tset, tokens = setup
    clean = model(tokens)
    spliced = run_spliced(model, tset, tokens, error_term=True)
    assert (spliced - clean).abs().max().item() < 1e-5
    # and the transcoders really ran: without the error term the output moves
    assert (run_spliced(model, tset, tokens, error_term=False) - clean).abs().max().item() > 1e-2


def test_splice_last_layer_without_error_matches_hand_computation(setup):
    model, tset, tokens = setup
    _, cache = model.run_with_cache(tokens)
    tc = tset[2]
    resid = cache["blocks.2.hook_resid_mid"] + tc(cache["blocks.2.ln2.hook_normalized"])
    centred = resid - resid.mean(-1, keepdim=True)
    normed = centred / (centred.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()  # LNPre: weights folded
    expected = normed @ model.W_U + model.b_U
    got = run_spliced(model, tset, tokens, layers=[2], error_term=False)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_splice_composes_with_run_with_cache(setup):
    model, tset, tokens = setup
    record = {}
    with model.hooks(fwd_hooks=splice_hooks(tset, layers=[0], record=record)):
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_mlp_out")
    _, clean = model.run_with_cache(tokens, names_filter="blocks.0.ln2.hook_normalized")
    x = clean["blocks.0.ln2.hook_normalized"]
    torch.testing.assert_close(cache["blocks.0.hook_mlp_out"], tset[0](x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(record[0], tset[0].encode(x))


def test_feature_activations_match_encoding_the_cache(setup):
    model, tset, tokens = setup
    acts = feature_activations(model, tset, tokens)
    _, cache = model.run_with_cache(tokens)
    for layer in tset.layers:
        expected = tset[layer].encode(cache[f"blocks.{layer}.ln2.hook_normalized"])
        torch.testing.assert_close(acts[layer], expected)
        assert ((acts[layer] != 0).sum(-1) <= tset[layer].cfg.k).all()
    only_first = feature_activations(model, tset, tokens, layers=[0])
    assert list(only_first) == [0]


def test_steering_clamp_equals_hand_built_hooks(setup):
    model, tset, tokens = setup
    layer, feature, value = 1, 17, 6.0
    original, steered = steer(model, tset, tokens, {layer: {feature: value}})
    tc = tset[layer]
    saved = {}

    def keep(x, hook):
        saved["x"] = x

    def add_delta(y, hook):
        pre = saved["x"] @ tc.W_enc + tc.b_enc
        top = pre.topk(tc.cfg.k, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.clamp_min(0))
        return y + (value - acts[..., feature:feature + 1]) * tc.W_dec[feature]

    expected = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.ln2.hook_normalized", keep),
                                                       (f"blocks.{layer}.hook_mlp_out", add_delta)])
    torch.testing.assert_close(steered, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(original, model(tokens))
    assert (steered - original).abs().max() > 1e-2


def test_zeroing_a_feature_only_at_one_position(setup):
    model, tset, tokens = setup
    acts = feature_activations(model, tset, tokens)[0]
    position = 5
    feature = int(acts[0, position].argmax())
    original, steered = steer(model, tset, tokens, {0: {feature: 0.0}}, positions=[position])
    # positions before the edit are untouched (causal model), the edited one changes
    torch.testing.assert_close(steered[:, :position], original[:, :position], atol=1e-5, rtol=1e-5)
    assert (steered[0, position] - original[0, position]).abs().max() > 1e-4


def test_bad_feature_and_layer_are_clear(setup):
    model, tset, tokens = setup
    with pytest.raises(FeaturesUnavailable, match="feature 9999 is out of range.*0..255"):
        steer(model, tset, tokens, {0: {9999: 1.0}})
    with pytest.raises(FeaturesUnavailable, match="no transcoder for layer 7"):
        steer(model, tset, tokens, {7: {0: 1.0}})
    with pytest.raises(FeaturesUnavailable, match="at least one feature"):
        steer(model, tset, tokens, {})


def test_evaluation_against_plain_computation(setup):
    model, tset, tokens = setup
    result = evaluate_transcoders(model, tset, tokens, chunk=1)
    _, cache = model.run_with_cache(tokens)
    for layer in tset.layers:
        x, y = cache[f"blocks.{layer}.ln2.hook_normalized"], cache[f"blocks.{layer}.hook_mlp_out"]
        y2 = y.reshape(-1, y.shape[-1])
        fvu = (tset[layer](x).reshape(-1, y.shape[-1]) - y2).pow(2).sum() / (y2 - y2.mean(0)).pow(2).sum()
        acts = tset[layer].encode(x)
        assert result["layers"][layer]["fvu"] == pytest.approx(fvu.item(), rel=1e-4)
        assert result["layers"][layer]["l0"] == pytest.approx((acts != 0).sum(-1).float().mean().item())
        dead = 1 - (acts != 0).reshape(-1, acts.shape[-1]).any(0).float().mean().item()
        assert result["layers"][layer]["dead_frac"] == pytest.approx(dead)
    assert result["clean_loss"] == pytest.approx(model(tokens, return_type="loss").item(), rel=1e-5)
    spliced = run_spliced(model, tset, tokens, return_type="loss")
    assert result["spliced_loss"] == pytest.approx(spliced.item(), rel=1e-5)
