"""circuit-tracer's convention at the BOS position (``zero_bos``): no feature nodes at position 0, error nodes
there with no edges, what position 0's MLPs write counted as a constant. Both settings against autograd through
the frozen model (``graph_reference``), and the default unchanged."""

from __future__ import annotations

import pytest
import torch
from exp_tiny import random_tokens, tiny, tiny_graph_case
from graph_reference import completeness_residual, reference_rows
from graph_support import random_transcoders

from lens_core.experiments import AttributionGraphRequest, attribution_graph
from lens_core.experiments.graphs._expand import expand_graph
from lens_core.experiments.graphs._replacement import build_graph


@pytest.mark.parametrize("family,fold", [("gpt2", True), ("llama", False)])
def test_both_bos_settings_match_autograd(family, fold):
    model, tset, tokens = tiny_graph_case(family, fold, 7, 11)
    plain = build_graph(model, tset, tokens, max_logits=2)
    zeroed = build_graph(model, tset, tokens, max_logits=2, zero_bos=True)
    at0 = plain.feature_pos == 0
    assert int(at0.sum()) > 0 and zeroed.n_features == plain.n_features - int(at0.sum())
    assert int((zeroed.feature_pos == 0).sum()) == 0
    for graph, zero in ((plain, False), (zeroed, True)):
        assert completeness_residual(graph).abs().max() < 1e-4
        top = (graph.feature_layer == model.cfg.n_layers - 1).nonzero()[:, 0]
        targets = [int(top[0]), int(top[-1]), graph.logit_node(0)]
        expected = reference_rows(model, tset, tokens, graph, targets, zero_bos=zero)
        torch.testing.assert_close(graph.adjacency[targets], expected, atol=1e-4, rtol=1e-4)
        assert expected.abs().max() > 1e-2
    errors0 = [zeroed.error_node(l, 0) for l in range(zeroed.n_layers)]
    assert zeroed.adjacency[:, errors0].abs().max() == 0
    assert plain.adjacency[:, [plain.error_node(l, 0) for l in range(plain.n_layers)]].abs().max() > 0
    # The edges among nodes both graphs have are the same (the frozen model's gradients do not change).
    keep = torch.cat([(~at0).nonzero()[:, 0], torch.arange(plain.n_features, plain.n_nodes)])  # zeroed -> plain
    cols = torch.tensor([i for i in range(zeroed.n_nodes) if i not in errors0])
    torch.testing.assert_close(zeroed.adjacency[:, cols], plain.adjacency[keep][:, keep[cols]], atol=1e-5, rtol=1e-5)


def test_zero_bos_goes_through_the_budget_and_the_request():
    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    tokens = random_tokens(7, seed=12)
    dense = build_graph(model, tset, tokens, max_logits=2, zero_bos=True)
    greedy = expand_graph(model, tset, tokens, max_logits=2, max_feature_nodes=10, zero_bos=True, batch_size=4).graph
    assert int((greedy.feature_pos == 0).sum()) == 0 and greedy.n_features == 10
    assert completeness_residual(greedy).abs().max() < 1e-4
    kept = [int(((dense.feature_layer == l) & (dense.feature_pos == p) & (dense.feature_index == f)).nonzero()[0, 0])
            for l, p, f in zip(greedy.feature_layer.tolist(), greedy.feature_pos.tolist(), greedy.feature_index.tolist())]
    torch.testing.assert_close(greedy.adjacency[-1, :10], dense.adjacency[-1, kept], atol=1e-5, rtol=1e-5)
    result = attribution_graph(model, AttributionGraphRequest(tokens=tuple(tokens[0].tolist()), zero_bos=True, check_top=3),
                               transcoders=tset)
    assert result.settings["zero_bos"] is True and result.completeness_error < 1e-4
    assert all(p > 0 for k, p in zip(result.node_kind, result.node_pos) if k == "feature")
    default = attribution_graph(model, AttributionGraphRequest(tokens=tuple(tokens[0].tolist()), check_top=3),
                                transcoders=tset)
    assert "zero_bos" not in default.settings
