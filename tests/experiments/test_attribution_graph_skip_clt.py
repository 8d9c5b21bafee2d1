"""Attribution graphs with skip transcoders and cross-layer transcoders: every edge against autograd through the
frozen model (``graph_reference``: the skip term live, so it carries gradient; CLT features write every later
layer), completeness exact, and the plain per-layer graph the special case."""

from __future__ import annotations

import pytest
import torch
from exp_tiny import random_tokens, tiny
from graph_reference import completeness_residual, reference_rows
from graph_support import random_clt, random_skip_transcoders, random_transcoders

from lens_core.experiments.graphs._clt_walk import prepare_dictionary_walk
from lens_core.experiments.graphs._expand import expand_graph
from lens_core.experiments.graphs._replacement import build_graph, fill_dense, prepare_walk

CASES = [("gpt2", True), ("llama", False)]


def _targets(graph, n_layers):
    """Features of several layers (the top one reads every lower layer's output) and every logit."""
    picks = []
    for layer in (n_layers - 1, 1):
        at = (graph.feature_layer == layer).nonzero()[:, 0]
        picks += [int(at[0]), int(at[-1])]
    return picks + list(range(graph.logit_node(0), graph.n_nodes))


def _check(model, dictionary, tokens, zero_bos=False):
    graph = build_graph(model, dictionary, tokens, max_logits=2, zero_bos=zero_bos)
    assert graph.n_features > 20
    assert completeness_residual(graph).abs().max() < 1e-4
    targets = _targets(graph, model.cfg.n_layers)
    expected = reference_rows(model, dictionary, tokens, graph, targets, zero_bos=zero_bos)
    torch.testing.assert_close(graph.adjacency[targets], expected, atol=1e-4, rtol=1e-4)
    assert expected.abs().max() > 1e-2
    return graph


@pytest.mark.parametrize("family,fold", CASES)
def test_skip_transcoder_edges_match_autograd(family, fold):
    model = tiny(family, fold)
    tokens = random_tokens(7, seed=21)
    skip = random_skip_transcoders(model, skip_layers={0, 1})
    graph = _check(model, skip, tokens)
    # The skip path matters: without it (the same features, the skip folded away) edges differ.
    plain = build_graph(model, random_transcoders(model, seed=1), tokens, max_logits=2)
    assert torch.equal(plain.feature_index, graph.feature_index)
    assert (plain.adjacency - graph.adjacency).abs().max() > 1e-3


@pytest.mark.parametrize("family,fold", CASES)
def test_clt_edges_match_autograd(family, fold):
    model = tiny(family, fold)
    tokens = random_tokens(7, seed=22)
    graph = _check(model, random_clt(model), tokens)
    # A layer-0 feature writes every layer: its edge into a logit is not its layer-0 write alone.
    assert int((graph.feature_layer == 0).sum()) > 0


def test_clt_unique_column_sources_match_autograd(monkeypatch):
    from lens_core.experiments.graphs import _clt_walk

    monkeypatch.setattr(_clt_walk, "PADDED_BYTES", 0)  # every layer multiplied by its distinct active features
    model = tiny("gpt2", True)
    _check(model, random_clt(model, skip=True), random_tokens(7, seed=26))


def test_clt_with_skip_and_zero_bos_match_autograd():
    model = tiny("gpt2", True)
    tokens = random_tokens(7, seed=23)
    clt = random_clt(model, skip=True)
    graph = _check(model, clt, tokens, zero_bos=True)
    assert int((graph.feature_pos == 0).sum()) == 0
    assert graph.adjacency[:, [graph.error_node(l, 0) for l in range(graph.n_layers)]].abs().max() == 0
    _check(model, random_skip_transcoders(model), tokens, zero_bos=True)


def test_the_general_walk_on_plain_transcoders_is_the_per_layer_graph():
    model = tiny("llama", False)
    tset = random_transcoders(model)
    tokens = random_tokens(8, seed=24)
    plain = fill_dense(prepare_walk(model, tset, tokens, max_logits=3))
    general = fill_dense(prepare_dictionary_walk(model, tset, tokens, max_logits=3))
    torch.testing.assert_close(general.adjacency, plain.adjacency, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(general.node_bias, plain.node_bias, atol=1e-5, rtol=1e-5)


def test_budgeted_clt_graph_keeps_completeness():
    model = tiny("gpt2", True)
    clt = random_clt(model, skip=True)
    tokens = random_tokens(8, seed=25)
    dense = build_graph(model, clt, tokens, max_logits=2)
    greedy = expand_graph(model, clt, tokens, max_logits=2, max_feature_nodes=15, batch_size=4).graph
    assert greedy.n_features == 15 and completeness_residual(greedy).abs().max() < 1e-4
    kept = [int(((dense.feature_layer == l) & (dense.feature_pos == p) & (dense.feature_index == f)).nonzero()[0, 0])
            for l, p, f in zip(greedy.feature_layer.tolist(), greedy.feature_pos.tolist(), greedy.feature_index.tolist())]
    torch.testing.assert_close(greedy.adjacency[-1, :15], dense.adjacency[-1, kept], atol=1e-5, rtol=1e-5)
