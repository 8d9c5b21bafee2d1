"""The feature-node budget (graphs._expand): exact rows, most influential first, against the dense graph."""

import pytest
import torch

from lens_core.experiments.graphs._expand import expand_graph
from lens_core.experiments.graphs._graph_prune import logit_weights, normalized_abs, node_influence
from lens_core.experiments.graphs._replacement import build_graph

from exp_tiny import random_tokens, tiny
from graph_support import random_transcoders


@pytest.fixture(scope="module")
def setup():
    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    tokens = random_tokens(9, seed=3)
    dense = build_graph(model, tset, tokens, max_logits=3, logit_mass=0.99)
    return model, tset, tokens, dense


def _full_index(dense, graph):
    """Each kept node's index in the dense graph."""
    key = {(int(l), int(p), int(f)): i for i, (l, p, f) in
           enumerate(zip(dense.feature_layer.tolist(), dense.feature_pos.tolist(), dense.feature_index.tolist()))}
    feats = [key[(int(l), int(p), int(f))] for l, p, f in
             zip(graph.feature_layer.tolist(), graph.feature_pos.tolist(), graph.feature_index.tolist())]
    return torch.tensor(feats + list(range(dense.n_features, dense.n_nodes)), dtype=torch.long)


def test_budget_off_or_large_is_the_dense_graph_exactly(setup):
    model, tset, tokens, dense = setup
    for budget in (None, 10**6):
        exp = expand_graph(model, tset, tokens, max_logits=3, logit_mass=0.99, max_feature_nodes=budget)
        assert not exp.expanded and exp.notice is None
        assert torch.equal(exp.graph.adjacency, dense.adjacency) and torch.equal(exp.graph.node_bias, dense.node_bias)
    # The greedy path with a budget over every feature computes the row of every feature with influence on the
    # targets (exactly those: the others, e.g. last-layer features before the last position, reach nothing).
    exp = expand_graph(model, tset, tokens, max_logits=3, logit_mass=0.99, max_feature_nodes=10**6, batch_size=7,
                       dense_if_fits=False)
    graph = exp.graph
    idx = _full_index(dense, graph)
    reaching = (node_influence(dense)[: dense.n_features] > 0).nonzero()[:, 0]
    assert exp.expanded and idx[: graph.n_features].tolist() == reaching.tolist()
    assert 0 < reaching.numel() < dense.n_features
    torch.testing.assert_close(graph.adjacency, dense.adjacency[idx][:, idx], atol=1e-6, rtol=0)
    torch.testing.assert_close(graph.node_bias, dense.node_bias[idx], atol=1e-6, rtol=0)
    rows = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_node(0), graph.n_nodes)])
    out = torch.ones(dense.n_nodes, dtype=torch.bool)
    out[idx] = False
    torch.testing.assert_close(graph.dropped[rows], dense.adjacency[idx[rows]][:, out].sum(1), atol=1e-6, rtol=0)


def test_first_batch_is_the_top_direct_influence_and_edges_are_exact(setup):
    model, tset, tokens, dense = setup
    budget = 12
    exp = expand_graph(model, tset, tokens, max_logits=3, logit_mass=0.99, max_feature_nodes=budget, batch_size=budget)
    graph = exp.graph
    assert exp.expanded and graph.n_features == budget and "keeps the 12 most influential" in exp.notice
    # With one batch, the kept features are the top ones by the logits' direct (one-step) influence.
    direct = (logit_weights(dense) @ normalized_abs(dense.adjacency))[: dense.n_features]
    idx = _full_index(dense, graph)
    assert set(idx[:budget].tolist()) == set(direct.topk(budget).indices.tolist())
    # Every kept edge is the dense edge; the left-out sources sum to `dropped`; input = edges + bias + dropped.
    rows = torch.cat([torch.arange(budget), torch.arange(graph.logit_node(0), graph.n_nodes)])
    torch.testing.assert_close(graph.adjacency[rows], dense.adjacency[idx[rows]][:, idx], atol=1e-6, rtol=0)
    out = torch.ones(dense.n_nodes, dtype=torch.bool)
    out[idx] = False
    torch.testing.assert_close(graph.dropped[rows], dense.adjacency[idx[rows]][:, out].sum(1), atol=1e-5, rtol=0)
    total = graph.adjacency[rows].sum(1) + graph.node_bias[rows] + graph.dropped[rows]
    torch.testing.assert_close(total, graph.node_input[rows], atol=1e-4, rtol=0)


def test_greedy_keeps_the_most_influential_features(setup):
    model, tset, tokens, dense = setup
    budget = dense.n_features // 3
    exp = expand_graph(model, tset, tokens, max_logits=3, logit_mass=0.99, max_feature_nodes=budget, batch_size=4)
    kept = set(_full_index(dense, exp.graph)[:budget].tolist())
    truth = set(node_influence(dense)[: dense.n_features].topk(budget).indices.tolist())
    assert len(kept & truth) >= 0.8 * budget, (len(kept & truth), budget)
    random_overlap = budget * budget / dense.n_features
    assert len(kept & truth) > 2 * random_overlap


def test_share_stops_early_and_bad_budgets(setup):
    model, tset, tokens, dense = setup
    exp = expand_graph(model, tset, tokens, max_logits=3, logit_mass=0.99, max_feature_nodes=10**6, influence_share=0.5,
                       batch_size=4, dense_if_fits=False)
    assert exp.graph.n_features < dense.n_features and "50% of the estimated influence" in exp.notice
    with pytest.raises(ValueError, match="influence share must be in"):
        expand_graph(model, tset, tokens, max_feature_nodes=5, influence_share=0.0)
    with pytest.raises(ValueError, match="budget must be 0 or more"):
        expand_graph(model, tset, tokens, max_feature_nodes=-1)
    none = expand_graph(model, tset, tokens, max_logits=3, max_feature_nodes=0)
    assert none.graph.n_features == 0 and none.graph.n_nodes == dense.n_nodes - dense.n_features + 0 - 3 + none.graph.n_logits


def test_direction_target_is_the_difference_of_the_two_logit_rows(setup):
    from lens_core.experiments import AttributionGraphRequest, attribution_graph

    model, tset, tokens, _ = setup
    pair = build_graph(model, tset, tokens, targets=[4, 9])
    direction = build_graph(model, tset, tokens, targets=[4], minus=9)
    x, y, d = pair.logit_node(0), pair.logit_node(1), direction.logit_node(0)
    assert direction.n_logits == 1 and direction.logit_minus == 9
    torch.testing.assert_close(direction.adjacency[d, :d], pair.adjacency[x, :x] - pair.adjacency[y, :x], atol=1e-5, rtol=0)
    torch.testing.assert_close(direction.node_bias[d], pair.node_bias[x] - pair.node_bias[y], atol=1e-5, rtol=0)
    logits = model(tokens)[0, -1].float()  # the real model's logit difference, and completeness
    torch.testing.assert_close(direction.node_input[d], logits[4] - logits[9], atol=1e-4, rtol=0)
    torch.testing.assert_close(direction.adjacency[d].sum() + direction.node_bias[d], direction.node_input[d], atol=1e-4, rtol=0)
    ids = tuple(tokens[0].tolist())
    result = attribution_graph(model, AttributionGraphRequest(tokens=ids, direction=(4, 9), check_top=4), transcoders=tset)
    assert result.direction == [4, 9] and result.logit_ids == [4] and " - " in result.logit_tokens[0]
    assert result.completeness_error < 1e-4 and result.check_actual.abs().max() > 0
    # The real-model check measures the same direction: zeroing a feature moves logit(4) - logit(9).
    plain = attribution_graph(model, AttributionGraphRequest(tokens=ids, targets=(4, 9), check_top=4), transcoders=tset)
    assert result.check_actual.shape == plain.check_actual.shape


def test_bad_targets_have_clear_messages(setup):
    from lens_core.experiments import AttributionGraphRequest, attribution_graph

    model, tset, tokens, _ = setup
    ids = tuple(tokens[0].tolist())

    def run(**kw):
        return attribution_graph(model, AttributionGraphRequest(tokens=ids, check_top=0, **kw), transcoders=tset)

    with pytest.raises(ValueError, match="target token id 100000 is outside the vocabulary"):
        run(targets=(10**5,))
    with pytest.raises(ValueError, match=r"direction token y token id -1 is outside the vocabulary"):
        run(direction=(4, -1))
    with pytest.raises(ValueError, match=r"direction logit\(x\) - logit\(y\) is empty: x and y are the same token \(4\)"):
        run(direction=(4, 4))
    with pytest.raises(ValueError, match=r"a direction is two tokens \(x, y\).*got 1"):
        run(direction=(4,))
    with pytest.raises(ValueError, match="either target tokens or a direction"):
        run(targets=(5,), direction=(4, 9))
    with pytest.raises(ValueError, match="are tuples of tokens"):
        run(direction="4")


def test_influence_estimate_equals_the_dense_path_series_over_computed_rows():
    """_influence's block trick (every step but the last inside the expanded nodes) against the plain series
    w @ (A + ... + A^depth) on a dense matrix whose rows are zero for nodes not expanded."""
    from lens_core.experiments.graphs._expand import _influence

    gen = torch.Generator().manual_seed(0)
    N, depth = 40, 5
    expanded = torch.zeros(N, dtype=torch.bool)
    expanded[torch.randperm(N, generator=gen)[:15]] = True
    expanded[-3:] = True  # the "logits"
    dense = torch.rand(N, N, generator=gen) * (torch.rand(N, N, generator=gen) < 0.3)
    dense = torch.tril(dense, -1)  # a DAG: each node reads lower-numbered ones; the logits are last
    dense[~expanded] = 0
    normalized = dense / dense.sum(1, keepdim=True).clamp_min(1e-12)
    weights = torch.zeros(N)
    weights[-3:] = torch.tensor([0.5, 0.3, 0.2])
    want, current = torch.zeros(N), weights
    for _ in range(depth):
        current = current @ normalized
        want += current
    r, c = normalized.nonzero(as_tuple=True)
    half = r.numel() // 2  # two stored batches, as the greedy loop keeps them
    chunks = [(r[:half].int(), c[:half].int(), normalized[r[:half], c[:half]]),
              (r[half:].int(), c[half:].int(), normalized[r[half:], c[half:]])]
    got = _influence(chunks, expanded, weights, depth)
    assert (want[:-3] > 0).sum() >= 10  # paths of several steps reach many nodes
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("budget", [None, 10**6, 5])
def test_progress_counts_the_rows_and_does_not_change_the_graph(setup, budget):
    from lens_core.experiments import AttributionGraphRequest, attribution_graph

    model, tset, tokens, dense = setup
    calls = []
    exp = expand_graph(model, tset, tokens, max_logits=3, logit_mass=0.99, max_feature_nodes=budget, batch_size=4,
                       progress=lambda done, total: calls.append((done, total)))
    plain = expand_graph(model, tset, tokens, max_logits=3, logit_mass=0.99, max_feature_nodes=budget, batch_size=4)
    assert torch.equal(exp.graph.adjacency, plain.graph.adjacency)
    totals = {t for _, t in calls}
    done = [d for d, _ in calls]
    assert len(totals) == 1 and done == sorted(done) and done[-1] == calls[-1][1]
    rows = exp.graph.n_features + exp.graph.n_logits
    if budget is None or budget > dense.n_features:  # every row: features in batches of 4, then the targets
        assert calls[-1][1] == rows and len(calls) >= rows // 4
    else:
        assert calls[-1][1] == budget + exp.graph.n_logits
    ids = tuple(tokens[0].tolist())
    seen = []
    request = AttributionGraphRequest(tokens=ids, max_feature_nodes=budget, check_top=2)
    result = attribution_graph(model, request, transcoders=tset, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and seen[-2][0] < seen[-1][0]  # the last step is pruning and the check
    again = attribution_graph(model, request, transcoders=tset)
    assert torch.equal(result.adjacency, again.adjacency)
