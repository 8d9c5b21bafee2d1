"""Interventions on cross-layer transcoder features in the real model: a clamp changes every layer the feature
writes. References: a hand-written hook (clean MLP output plus the decoder rows at each later layer, the model's
MLP outputs of later layers recomputed), finite differences and the exact zeroing for full_path_check, and the
frozen replacement model for the graph's own prediction."""

from __future__ import annotations

import pytest
import torch
from exp_tiny import random_tokens, tiny
from graph_support import random_clt

from lens_core.experiments import AttributionGraphRequest, GraphInterventionRequest, attribution_graph, graph_intervention
from lens_core.experiments.graphs._graph_prune import predicted_effects
from lens_core.experiments.graphs._replacement import build_graph
from lens_core.experiments.graphs.full_path_check import gradient_predictions
from lens_core.experiments.graphs.graph_interventions import demeaned, run_interventions
from lens_core.features import FeaturesUnavailable


def _picks(clt, model, tokens, where):
    _, cache = model.run_with_cache(tokens)
    out = []
    for layer, pos in where:
        acts = clt.encode_layer(cache[clt.hook_in(layer)][0, pos], layer).detach()
        f = int(acts.argmax())
        out.append((layer, pos, f, float(acts[f])))
    return out


def _by_hand(model, clt, tokens, layer, pos, feature, value):
    """The feature's activation read live at its layer; (value - a) * W_dec[layer][f, t - layer] added at every
    later hook_mlp_out."""
    seen = {}

    def read(x, hook):
        seen["a"] = clt.encode_layer(x[0, pos], layer)[feature]

    def add(y, hook):
        t = hook.layer()
        y = y.clone()
        y[0, pos] += (value - seen["a"]) * clt.W_dec[layer][feature, t - layer]
        return y

    hooks = [(clt.hook_in(layer), read)] + [(clt.hook_out(t), add) for t in range(layer, model.cfg.n_layers)]
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1].float()


def test_clt_clamps_write_every_later_layer():
    model = tiny("gpt2", True)
    clt = random_clt(model)
    tokens = random_tokens(7, seed=31)
    feats = _picks(clt, model, tokens, [(0, 3), (1, 6)])
    sets = [[]] + [[(l, p, f, v)] for l, p, f, _ in feats for v in (0.0, 1.5)]
    got = run_interventions(model, clt, tokens, sets)
    refs = [model(tokens)[0, -1].float()] + [_by_hand(model, clt, tokens, l, p, f, v) for l, p, f, _ in feats for v in (0.0, 1.5)]
    torch.testing.assert_close(got, torch.stack(refs), atol=1e-4, rtol=1e-4)
    assert (got[1] - got[0]).abs().max() > 1e-3
    with pytest.raises(FeaturesUnavailable, match="out of range"):
        run_interventions(model, clt, tokens, [[(0, 1, clt.d_sae, 0.0)]])


def test_clt_full_path_gradient_matches_finite_differences_and_zeroing():
    model = tiny("llama", False)
    clt = random_clt(model)
    tokens = random_tokens(7, seed=32)
    feats = _picks(clt, model, tokens, [(0, 2), (1, 5), (2, 6)])
    target = 5
    mid = gradient_predictions(model, clt, tokens, feats, target, steps=1)
    eps = 1e-2
    for i, (l, p, f, a) in enumerate(feats):
        up, down = (demeaned(run_interventions(model, clt, tokens, [[(l, p, f, a / 2 + s)]]))[0, target] for s in (eps, -eps))
        assert mid[i] == pytest.approx(-a * float(up - down) / (2 * eps), rel=2e-2, abs=1e-3)
    exact = demeaned(run_interventions(model, clt, tokens, [[]] + [[(l, p, f, 0.0)] for l, p, f, _ in feats]))[:, target]
    many = gradient_predictions(model, clt, tokens, feats, target, steps=32)
    torch.testing.assert_close(many, (exact[1:] - exact[0]).cpu(), atol=2e-3, rtol=1e-2)


def test_clt_graph_experiments_run_and_predict_the_frozen_zeroing():
    model = tiny("gpt2", True)
    clt = random_clt(model, skip=True)
    tokens = random_tokens(8, seed=33)
    request = AttributionGraphRequest(tokens=tuple(tokens[0].tolist()), check_top=6)
    result = attribution_graph(model, request, transcoders=clt)
    assert result.completeness_error < 1e-4 and len(result.check_nodes) == 6
    assert result.check_correlation is not None and result.check_correlation_full is not None
    # With attention patterns and norm scales frozen, a clamp on a last-layer feature (no MLP after it) changes
    # the logits exactly as the graph predicts.
    graph = build_graph(model, clt, tokens, max_logits=3)
    top = int(((graph.feature_layer == model.cfg.n_layers - 1)).nonzero()[-1, 0])
    l, p, f = int(graph.feature_layer[top]), int(graph.feature_pos[top]), int(graph.feature_index[top])
    value = 0.5 * float(graph.activations[top])
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith(("hook_pattern", "hook_scale")))
    frozen = demeaned(run_interventions(model, clt, tokens, [[], [(l, p, f, value)]], dict(cache.items())))
    predicted = predicted_effects(graph, [[(top, value)]])[graph.logit_node(0):, 0]
    torch.testing.assert_close(predicted, (frozen[1] - frozen[0])[graph.logit_tokens], atol=1e-4, rtol=1e-3)
    assert predicted.abs().max() > 1e-3
    out = graph_intervention(model, GraphInterventionRequest(tokens=tuple(tokens[0].tolist()), clamps=((l, p, f, value),),
                                                             max_logits=3), transcoders=clt)
    torch.testing.assert_close(out.predicted_change, predicted, atol=1e-5, rtol=1e-5)
