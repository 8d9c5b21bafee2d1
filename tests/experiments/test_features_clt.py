"""The Features experiments with a cross-layer transcoder (CLT), on the bundled model with a random CLT.

References: the activations by hand from the CLT's weights on the cached MLP inputs; steering by hooks written
here (each later layer's ``hook_mlp_out`` plus ``(value - a) * W_dec[L][f, t - L]``, ``a`` read live) and, with
the error term off, by a plain loop over the layers rebuilding each replaced MLP output from the weights."""

from __future__ import annotations

import pytest
import torch
from features_support import default_model
from graph_support import random_clt

from lens_core.experiments.views.features import (FeatureActivationsRequest, SteeringRequest, UnitActivationRequest,
                                                  feature_activations_on_prompt, feature_steering, unit_activation)
from lens_core.features import FeaturesUnavailable

PROMPT = "import os\nfor name in os.listdir(path):\n    print(name)"


@pytest.fixture(scope="module")
def setup():
    model = default_model()
    clt = random_clt(model, d_sae=48, seed=5)
    ids = tuple(model.to_tokens(PROMPT)[0].tolist())
    return model, clt, ids


def _by_hand(model, clt, ids):
    """{layer: [pos, d_sae]}: ReLU(x_s @ W_enc[s] + b_enc[s]) on the cached ``ln2.hook_normalized``."""
    _, cache = model.run_with_cache(torch.tensor([ids]))
    return {s: torch.relu(cache[f"blocks.{s}.ln2.hook_normalized"][0] @ clt.W_enc[s] + clt.b_enc[s]).detach()
            for s in range(model.cfg.n_layers)}


def test_clt_activations_on_the_prompt_are_each_layers_encoder(setup):
    model, clt, ids = setup
    hand = _by_hand(model, clt, ids)
    result = feature_activations_on_prompt(model, FeatureActivationsRequest(tokens=ids, top_per_token=5, top_per_layer=6),
                                           transcoders=clt)
    assert result.layers == [0, 1, 2]
    for i, layer in enumerate(result.layers):
        a = hand[layer]
        assert int(result.n_active.sum()) > 0
        assert result.n_active[i].tolist() == (a > 0).sum(-1).tolist()
        for pos in range(len(ids)):
            expected = sorted(((v, f) for f, v in enumerate(a[pos].tolist()) if v > 0), reverse=True)[:5]
            got = [(v, f) for v, f in zip(result.top_acts[i, pos].tolist(), result.top_features[i, pos].tolist()) if f >= 0]
            assert [f for _, f in got] == [f for _, f in expected]
            assert [v for v, _ in got] == pytest.approx([v for v, _ in expected], abs=1e-5)
        peak = a.max(0).values
        rows = [f for f in peak.argsort(descending=True)[:6].tolist() if peak[f] > 0]
        assert [f for f in result.peak_features[i].tolist() if f >= 0] == rows
        torch.testing.assert_close(result.peak_acts[i, : len(rows)], a[:, rows].T, atol=1e-5, rtol=1e-5)
    one = feature_activations_on_prompt(model, FeatureActivationsRequest(tokens=ids, layers=(2,)), transcoders=clt)
    assert one.layers == [2]
    with pytest.raises(FeaturesUnavailable, match="out of range"):
        feature_activations_on_prompt(model, FeatureActivationsRequest(tokens=ids, layers=(3,)), transcoders=clt)


def test_clt_unit_activation(setup):
    model, clt, ids = setup
    hand = _by_hand(model, clt, ids)
    feature = int(hand[1].max(0).values.argmax())
    unit = unit_activation(model, UnitActivationRequest(tokens=ids, layer=1, index=feature), transcoders=clt)
    torch.testing.assert_close(unit.acts, hand[1][:, feature], atol=1e-5, rtol=1e-5)
    assert float(unit.acts.max()) > 0 and unit.unit == f"L1 feature {feature}"
    for layer, index in ((1, clt.d_sae), (3, 0), (-1, 0)):
        with pytest.raises(FeaturesUnavailable, match="out of range"):
            unit_activation(model, UnitActivationRequest(tokens=ids, layer=layer, index=index), transcoders=clt)


def _live_clamp_logits(model, clt, ids, edits, positions, later=True):
    """Clamps by hand: each edited feature read live at its layer's input; ``(value - a) * W_dec[L][f, t - L]``
    added at ``hook_mlp_out`` of every layer ``t >= L`` (only ``t == L`` with ``later=False``)."""
    seen = {}

    def read(x, hook):
        s = hook.layer()
        seen[s] = torch.relu(x[0] @ clt.W_enc[s] + clt.b_enc[s])

    def add(y, hook):
        t = hook.layer()
        y = y.clone()
        for s, f, v in edits:
            if s <= t and (later or s == t):
                for p in positions:
                    y[0, p] += (v - seen[s][p, f]) * clt.W_dec[s][f, t - s]
        return y

    layers = sorted({s for s, _, _ in edits})
    hooks = [(f"blocks.{s}.ln2.hook_normalized", read) for s in layers]
    hooks += [(f"blocks.{t}.hook_mlp_out", add) for t in range(layers[0], model.cfg.n_layers)]
    with torch.no_grad():
        return model.run_with_hooks(torch.tensor([ids]), fwd_hooks=hooks)[0].float()


def _matches(result, model, ids, steered_logits):
    lp_o = model(torch.tensor([ids]))[0].float().log_softmax(-1)
    lp_s = steered_logits.log_softmax(-1)
    k = result.steered_probs.shape[1]
    torch.testing.assert_close(result.steered_probs, lp_s.exp().topk(k, dim=-1).values, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.original_probs, lp_o.exp().topk(k, dim=-1).values, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(result.kl, (lp_o.exp() * (lp_o - lp_s)).sum(-1), atol=1e-5, rtol=1e-4)


def test_clt_steering_changes_every_later_layer(setup):
    model, clt, ids = setup
    hand = _by_hand(model, clt, ids)
    f0 = int(hand[0].max(0).values.argmax())
    f1 = int(hand[1].max(0).values.argmax())
    edits = ((0, f0, 0.0), (1, f1, 4.0))
    every = list(range(len(ids)))
    result = feature_steering(model, SteeringRequest(tokens=ids, edits=edits, top_k=6), transcoders=clt)
    reference = _live_clamp_logits(model, clt, ids, edits, every)
    _matches(result, model, ids, reference)
    assert float(result.kl.max()) > 1e-4
    # The writes into later layers matter: editing only each feature's own layer gives other logits.
    own_layer_only = _live_clamp_logits(model, clt, ids, edits, every, later=False)
    assert (own_layer_only - reference).abs().max() > 1e-3
    last = feature_steering(model, SteeringRequest(tokens=ids, edits=edits, positions=(-1,), top_k=6), transcoders=clt)
    _matches(last, model, ids, _live_clamp_logits(model, clt, ids, edits, [len(ids) - 1]))
    assert float(last.kl[:-1].abs().max()) < 1e-5 < float(last.kl[-1])  # nothing before the edited position moves
    with pytest.raises(FeaturesUnavailable, match="out of range"):
        feature_steering(model, SteeringRequest(tokens=ids, edits=((1, clt.d_sae, 0.0),)), transcoders=clt)
    with pytest.raises(FeaturesUnavailable, match="out of range"):
        feature_steering(model, SteeringRequest(tokens=ids, edits=((5, 0, 0.0),)), transcoders=clt)


def _replaced_logits(model, clt, ids, edits):
    """Without the error term, by a plain loop: the MLP output of every layer t >= the lowest edited one is
    sum over s <= t of a_s @ W_dec[s][:, t - s] + b_dec[t] (+ x_t @ W_skip[t]), a_s read live, edits set."""
    low = min(s for s, _, _ in edits)
    x_in, acts = {}, {}

    def read(x, hook):
        s = hook.layer()
        x_in[s] = x[0]
        a = torch.relu(x[0] @ clt.W_enc[s] + clt.b_enc[s])
        for layer, f, v in edits:
            if layer == s:
                a[:, f] = v
        acts[s] = a

    def replace(y, hook):
        t = hook.layer()
        out = clt.b_dec[t].expand(y.shape[1], -1).clone()
        for s in range(t + 1):
            for f in range(clt.d_sae):
                out += acts[s][:, f:f + 1] * clt.W_dec[s][f, t - s]
        if clt.W_skip is not None:
            out += x_in[t] @ clt.W_skip[t]
        return out[None]

    hooks = [(f"blocks.{s}.ln2.hook_normalized", read) for s in range(model.cfg.n_layers)]
    hooks += [(f"blocks.{t}.hook_mlp_out", replace) for t in range(low, model.cfg.n_layers)]
    with torch.no_grad():
        return model.run_with_hooks(torch.tensor([ids]), fwd_hooks=hooks)[0].float()


@pytest.mark.parametrize("skip", [False, True])
def test_clt_steering_without_the_error_term_replaces_the_written_layers(setup, skip):
    model, _, ids = setup
    clt = random_clt(model, d_sae=48, seed=6, skip=skip)
    hand = _by_hand(model, clt, ids)
    f1 = int(hand[1].max(0).values.argmax())
    edits = ((1, f1, 0.0),)
    result = feature_steering(model, SteeringRequest(tokens=ids, edits=edits, error_term=False, top_k=6), transcoders=clt)
    _matches(result, model, ids, _replaced_logits(model, clt, ids, edits))
    kept = feature_steering(model, SteeringRequest(tokens=ids, edits=edits, error_term=True, top_k=6), transcoders=clt)
    assert (result.kl - kept.kl).abs().max() > 1e-4  # the reconstruction replaced the real MLP outputs
