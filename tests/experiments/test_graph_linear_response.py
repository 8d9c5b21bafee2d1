"""The graph's prediction of a clamp computed forward (graphs/_linear_response.py) against the full graph's own
``predicted_effects``: per-layer, skip and cross-layer transcoders, GPT-2-, Llama- and Gemma-2-style models (post-norms,
soft-capping), several sets at once; and graph_intervention on a prompt whose dense graph is over the node limit."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from exp_tiny import random_tokens, tiny
from graph_support import random_clt, random_skip_transcoders, random_transcoders

from lens_core import HookedTransformer
from lens_core.experiments import GraphInterventionRequest, graph_intervention
from lens_core.experiments.graphs._graph_prune import predicted_effects
from lens_core.experiments.graphs._linear_response import linear_response
from lens_core.experiments.graphs._replacement import build_graph


def _gemma2():
    import hf_tiny_families

    return HookedTransformer.from_hf_model(hf_tiny_families.gemma2(seed=4), tokenizer=None)


MODELS = {"gpt2": lambda: tiny("gpt2", True), "llama": lambda: tiny("llama", True), "gemma2": _gemma2}
KINDS = {"transcoders": random_transcoders, "skip": random_skip_transcoders, "clt": random_clt}


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_forward_prediction_equals_the_full_graphs(family, kind):
    model = MODELS[family]()
    tset = KINDS[kind](model)
    tokens = random_tokens(8, seed=5)
    graph = build_graph(model, tset, tokens, max_logits=4, logit_mass=0.99)
    # Three sets: one feature zeroed, one doubled, two together (a low layer's and a higher one's).
    low = int((graph.feature_layer == 0).nonzero()[len((graph.feature_layer == 0).nonzero()) // 2])
    high = int((graph.feature_layer == graph.n_layers - 2).nonzero()[0])
    sets_nodes = [[(low, 0.0)], [(high, 2.0 * float(graph.activations[high]))], [(low, 0.0), (high, 0.0)]]
    want = predicted_effects(graph, sets_nodes)[graph.logit_node(0):]  # [n_logits, 3]

    def clamp(node, value):
        return (int(graph.feature_layer[node]), int(graph.feature_pos[node]), int(graph.feature_index[node]), value)

    sets = [[clamp(n, v) for n, v in s] for s in sets_nodes]
    got = linear_response(model, tset, tokens, sets)[:, graph.logit_tokens].T
    assert want.abs().max() > 1e-4
    torch.testing.assert_close(got, want, atol=2e-4 * max(1.0, float(want.abs().max())), rtol=1e-3)


def test_inactive_clamp_is_refused_in_words():
    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    tokens = random_tokens(6, seed=2)
    _, cache = model.run_with_cache(tokens)
    acts = tset[1].encode(cache[str(tset[1].cfg.hook_in)][0])
    feature = int((acts[2] == 0).nonzero()[0])
    with pytest.raises(ValueError, match="is not active at position 2"):
        linear_response(model, tset, tokens, [[(1, 2, feature, 0.0)]])


def test_graph_intervention_runs_past_the_dense_node_limit():
    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    tokens = random_tokens(30, seed=9)
    graph_nodes = build_graph(model, tset, tokens[:, :6], max_logits=2).n_nodes / 6 * 30
    limit = int(graph_nodes // 2)  # the dense graph of this prompt would be refused
    with pytest.raises(ValueError, match="over the budget"):
        build_graph(model, tset, tokens, max_nodes=limit)
    _, cache = model.run_with_cache(tokens)
    acts = tset[0].encode(cache[str(tset[0].cfg.hook_in)][0])
    feature = int(acts[25].argmax())
    request = GraphInterventionRequest(tokens=tuple(tokens[0].tolist()), clamps=((0, 25, feature, 0.0),), max_nodes=limit)
    result = graph_intervention(model, request, transcoders=tset)
    assert result.predicted_change.shape == result.actual_change.shape and result.predicted_change.abs().max() > 0
    dense = graph_intervention(model, GraphInterventionRequest(tokens=request.tokens, clamps=request.clamps,
                                                               max_nodes=10**6), transcoders=tset)
    torch.testing.assert_close(result.predicted_change, dense.predicted_change, atol=1e-4, rtol=1e-4)
    assert torch.equal(result.actual_change, dense.actual_change)


@pytest.mark.parametrize("kind", ["skip", "clt"])
def test_zero_bos_forward_prediction_equals_the_zero_bos_graphs(kind):
    model = tiny("llama", True)
    tset = KINDS[kind](model)
    tokens = random_tokens(7, seed=6)
    graph = build_graph(model, tset, tokens, max_logits=3, logit_mass=0.99, zero_bos=True)
    nodes = [int(((graph.feature_layer == 0) & (graph.feature_pos == 1)).nonzero()[0]),
             int((graph.feature_layer == graph.n_layers - 2).nonzero()[-1])]
    want = predicted_effects(graph, [[(i, 0.0) for i in nodes]])[graph.logit_node(0):, 0]
    clamps = [(int(graph.feature_layer[i]), int(graph.feature_pos[i]), int(graph.feature_index[i]), 0.0) for i in nodes]
    got = linear_response(model, tset, tokens, [clamps], zero_bos=True)[0, graph.logit_tokens]
    assert want.abs().max() > 1e-4
    torch.testing.assert_close(got, want, atol=2e-4 * max(1.0, float(want.abs().max())), rtol=1e-3)
    plain = build_graph(model, tset, tokens, max_logits=3, logit_mass=0.99)
    at0 = int((plain.feature_pos == 0).nonzero()[0])
    bos = [(int(plain.feature_layer[at0]), 0, int(plain.feature_index[at0]), 0.0)]
    assert linear_response(model, tset, tokens, [bos]).abs().max() > 0
    with pytest.raises(ValueError, match="at position 0, which a graph that zeroes the BOS position"):
        linear_response(model, tset, tokens, [bos], zero_bos=True)


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_past_the_limit_the_walks_clean_pass_is_reused(family):
    """Past the dense limit: the walk's forward pass, the frozen batched pass, the real model's batch: three passes
    (the forward run's own clean pass is the walk's), and the prediction is the one with a clean pass of its own."""
    from lens_core.experiments.graphs._replacement import prepare_walk

    model = MODELS[family]()
    tset = random_clt(model) if family == "gemma2" else random_transcoders(model)
    tokens = random_tokens(9, seed=3)
    walk = prepare_walk(model, tset, tokens, max_logits=3)
    node = int((walk.partial.feature_pos == 4).nonzero()[0])
    clamp = (int(walk.partial.feature_layer[node]), 4, int(walk.partial.feature_index[node]), 0.0)
    alone = linear_response(model, tset, tokens, [[clamp]])
    reused = linear_response(model, tset, tokens, [[clamp]], cache=walk.cache)
    assert alone.abs().max() > 1e-4
    torch.testing.assert_close(reused, alone, atol=1e-5, rtol=1e-5)
    passes = []
    handle = model.embed.register_forward_hook(lambda module, args, out: passes.append(int(args[0].shape[0])))
    try:
        request = GraphInterventionRequest(tokens=tuple(tokens[0].tolist()), clamps=(clamp,), max_nodes=walk.partial.n_nodes - 1)
        result = graph_intervention(model, request, transcoders=tset)
        past = list(passes)
        passes.clear()
        dense = graph_intervention(model, dataclasses.replace(request, max_nodes=10**6), transcoders=tset)
    finally:
        handle.remove()
    assert past == [1, 2, 2]  # walk (clean run), frozen run (reference + the clamp set), real model (before, after)
    assert passes == [1, 2]  # the full graph: the walk's run and the real model's
    torch.testing.assert_close(result.predicted_change, dense.predicted_change, atol=1e-4, rtol=1e-4)
