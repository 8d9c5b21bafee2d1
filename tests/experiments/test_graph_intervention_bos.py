"""graph_intervention with ``zero_bos`` (circuit-tracer's BOS convention): both paths (the full graph within the
node limit, the forward run past it) predict what the zero_bos graph predicts, checked against a plain loop over
edges computed by autograd (``graph_reference``, none of the graph code); a clamp at position 0 has no node there
and is refused in words; the default keeps position 0's features as nodes."""

from __future__ import annotations

import pytest
import torch
from exp_tiny import random_tokens, tiny
from graph_reference import reference_rows
from graph_support import random_transcoders

from lens_core.experiments import GraphInterventionRequest, graph_intervention
from lens_core.experiments.graphs._replacement import build_graph


def _hand_prediction(graph, edges, clamps: dict[int, float]) -> torch.Tensor:
    """Each active feature's activation moves with its input (edges from features of earlier layers, one by one,
    in node order), the clamped ones are set; the logits' change from those moves. ``edges``: the rows of every
    feature node then every logit node."""
    n_feat = graph.n_features
    move = torch.zeros(n_feat, dtype=torch.float64)
    act = graph.activations.double()
    for i in range(n_feat):  # features are sorted by layer: every source of i is already final
        if i in clamps:
            move[i] = clamps[i] - act[i]
        else:
            move[i] = sum(float(edges[i, j]) * float(move[j] / act[j]) for j in range(i) if move[j] != 0)
    return edges[n_feat:, :n_feat].double() @ (move / act)


def _clamp(graph, node: int, value: float) -> tuple:
    return (int(graph.feature_layer[node]), int(graph.feature_pos[node]), int(graph.feature_index[node]), value)


@pytest.mark.parametrize("forward", [False, True], ids=["full graph", "forward run"])
def test_zero_bos_prediction_is_the_zero_bos_graphs(forward):
    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    tokens = random_tokens(6, seed=13)
    graph = build_graph(model, tset, tokens, zero_bos=True)  # the request's defaults: logit_mass 0.95, 10 logits
    assert int((graph.feature_pos == 0).sum()) == 0
    rows = list(range(graph.n_features)) + list(range(graph.logit_node(0), graph.n_nodes))
    edges = reference_rows(model, tset, tokens, graph, rows, zero_bos=True)
    low = int(((graph.feature_layer == 0) & (graph.feature_pos == 1)).nonzero()[-1])
    mid = int(((graph.feature_layer == 1) & (graph.feature_pos == 4)).nonzero()[0])
    clamps = {low: 0.0, mid: 2.0 * float(graph.activations[mid])}
    want = _hand_prediction(graph, edges, clamps).float()
    assert want.abs().max() > 1e-2
    limit = graph.n_nodes - 1 if forward else graph.n_nodes  # over the limit: the forward run
    request = GraphInterventionRequest(tokens=tuple(tokens[0].tolist()), clamps=tuple(_clamp(graph, i, v) for i, v in clamps.items()),
                                       max_nodes=limit, zero_bos=True)
    result = graph_intervention(model, request, transcoders=tset)
    assert torch.equal(result.target_ids, graph.logit_tokens)
    torch.testing.assert_close(result.predicted_change, want, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("forward", [False, True], ids=["full graph", "forward run"])
def test_a_clamp_at_the_bos_position_is_refused_with_zero_bos_only(forward):
    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    tokens = tuple(random_tokens(6, seed=13)[0].tolist())
    plain = build_graph(model, tset, torch.tensor([tokens]))
    at0 = int((plain.feature_pos == 0).nonzero()[0])
    clamp = (_clamp(plain, at0, 0.0),)
    limit = plain.n_nodes // 2 if forward else plain.n_nodes
    kept = graph_intervention(model, GraphInterventionRequest(tokens=tokens, clamps=clamp, max_nodes=limit), transcoders=tset)
    assert kept.predicted_change.abs().max() > 0
    with pytest.raises(ValueError, match="at position 0, which a graph that zeroes the BOS position"):
        graph_intervention(model, GraphInterventionRequest(tokens=tokens, clamps=clamp, max_nodes=limit, zero_bos=True),
                           transcoders=tset)
