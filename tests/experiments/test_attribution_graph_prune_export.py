import json

import jsonschema
import pytest
import torch

from lens_core.experiments import AttributionGraphRequest, attribution_graph
from lens_core.experiments.graphs._graph_prune import node_influence, normalized_abs, prune
from lens_core.experiments.graphs._replacement import ReplacementGraph, build_graph
from lens_core.experiments.graphs.graph_json import GRAPH_SCHEMA, graph_json
from lens_core.features import FeaturesUnavailable

from exp_tiny import random_tokens, tiny
from graph_support import random_transcoders


def _hand_graph() -> ReplacementGraph:
    """One layer, one position: features f0, f1, f2 read the embedding and write the logit (8, 1.5, 0.5)."""
    n = 6  # f0 f1 f2 | error | embedding | logit
    adjacency = torch.zeros(n, n)
    adjacency[5, :3] = torch.tensor([8.0, -1.5, 0.5])
    adjacency[:3, 4] = torch.tensor([1.0, 2.0, 3.0])
    return ReplacementGraph(
        tokens=torch.tensor([7]), feature_layer=torch.zeros(3, dtype=torch.long), feature_pos=torch.zeros(3, dtype=torch.long),
        feature_index=torch.tensor([0, 1, 2]), activations=torch.ones(3), logit_tokens=torch.tensor([9]),
        logit_probs=torch.tensor([0.5]), adjacency=adjacency, node_input=torch.zeros(n), node_bias=torch.zeros(n), n_layers=1)


def test_influence_on_a_hand_graph_and_its_pruning():
    graph = _hand_graph()
    influence = node_influence(graph)
    # By hand: |8|, |1.5|, |.5| normalised to .8, .15, .05; each feature reads only the embedding (1.0 in total).
    torch.testing.assert_close(influence, torch.tensor([0.8, 0.15, 0.05, 0.0, 1.0, 0.0]))
    keep, edges, _ = prune(graph, node_threshold=0.8, edge_threshold=0.98)
    # Sorted influence 1.0, .8, .15, .05 (total 2): the top two reach 90% >= 80%.
    assert keep.tolist() == [True, False, False, False, True, True]
    assert edges.nonzero().tolist() == [[0, 4], [5, 0]]


def test_influence_is_the_path_sum_of_the_normalised_graph():
    model = tiny("gpt2", True)
    graph = build_graph(model, random_transcoders(model), random_tokens(7, seed=2), max_logits=3)
    a = normalized_abs(graph.adjacency).double()
    weights = torch.zeros(graph.n_nodes, dtype=torch.float64)
    weights[graph.logit_node(0):] = graph.logit_probs.double() / graph.logit_probs.double().sum()
    eye = torch.eye(graph.n_nodes, dtype=torch.float64)
    expected = weights @ (torch.linalg.inv(eye - a) - eye)  # sum over all path lengths, in closed form
    torch.testing.assert_close(node_influence(graph).double(), expected, atol=1e-5, rtol=1e-4)


def test_pruned_graph_is_consistent_and_shrinks_with_the_thresholds():
    model = tiny("gpt2", True)
    graph = build_graph(model, random_transcoders(model), random_tokens(9, seed=8), max_logits=3)
    sizes = []
    for node_t, edge_t in ((0.5, 0.9), (0.8, 0.98), (0.99, 0.999)):
        keep, edges, _ = prune(graph, node_t, edge_t)
        assert keep[graph.embedding_node(0):].all()  # embeddings and logits always stay
        assert not (edges & ~(keep[:, None] & keep[None, :])).any()  # no edge to or from a dropped node
        feats = keep[: graph.n_features]
        assert edges[: graph.n_features][feats].any(1).all() and edges[:, : graph.n_features][:, feats].any(0).all()
        assert (graph.adjacency[edges] != 0).all()
        sizes.append((int(keep.sum()), int(edges.sum())))
    assert sizes[0] < sizes[1] < sizes[2]


@pytest.fixture(scope="module")
def small_result():
    model = tiny("gpt2", True)
    request = AttributionGraphRequest(tokens=tuple(random_tokens(8, seed=1)[0].tolist()), targets=(4, 9), check_top=6)
    return attribution_graph(model, request, transcoders=random_transcoders(model))


def test_export_validates_against_the_viewer_schema(small_result, tmp_path):
    result = small_result
    data = graph_json(result, "tiny-graph", "a prompt", labels={0: "first feature"}, supernodes=[("group", [0, 1])],
                      pinned=[0])
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(data))
    loaded = json.loads(path.read_text())
    jsonschema.validate(loaded, GRAPH_SCHEMA)
    ids = {node["node_id"] for node in loaded["nodes"]}
    assert len(ids) == len(result.node_kind)  # unique ids
    assert len(loaded["links"]) == int((result.adjacency != 0).sum())
    assert all(link["source"] in ids and link["target"] in ids for link in loaded["links"])
    assert loaded["qParams"]["supernodes"][0][0] == "group" and loaded["nodes"][0]["clerp"] == "first feature"
    assert sum(node["is_target_logit"] for node in loaded["nodes"]) == 1
    # The schema is not vacuous: a wrong node type or a missing section fails.
    broken = json.loads(path.read_text())
    broken["nodes"][0]["feature_type"] = "neuron"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, GRAPH_SCHEMA)
    del loaded["links"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(loaded, GRAPH_SCHEMA)


def test_result_reports_completeness_and_the_check(small_result):
    result = small_result
    assert result.completeness_error < 1e-4
    assert len(result.check_nodes) == 6 == result.check_actual.numel() == result.check_predicted.numel()
    assert all(result.node_kind[i] == "feature" for i in result.check_nodes)
    assert result.logit_ids == [4, 9]


def test_bad_inputs_have_clear_messages():
    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    tokens = tuple(random_tokens(8, seed=1)[0].tolist())
    with pytest.raises(ValueError, match=r"over the budget of 50.*prompts up to about \d+ tokens fit \(this one has 8\)"):
        attribution_graph(model, AttributionGraphRequest(tokens=tokens, max_nodes=50, max_feature_nodes=None), transcoders=tset)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        attribution_graph(model, AttributionGraphRequest(tokens=tokens, targets=(10**6,)), transcoders=tset)
    with pytest.raises(FeaturesUnavailable, match="no transcoders are bundled"):
        attribution_graph(model, AttributionGraphRequest(tokens=tokens))


def test_one_token_prompt_repeated_targets_and_no_check():
    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    one = attribution_graph(model, AttributionGraphRequest(tokens=(3,), targets=(5, 5, 7)), transcoders=tset)
    assert one.logit_ids == [5, 7] and one.completeness_error < 1e-4  # each target once
    none = attribution_graph(model, AttributionGraphRequest(tokens=(3, 4), check_top=0), transcoders=tset)
    assert none.check_nodes == [] and none.check_correlation is None
