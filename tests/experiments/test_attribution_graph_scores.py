"""Replacement and completeness scores (graphs._scores) against hand computation, and on real graphs."""

import torch

from lens_core.experiments.graphs._scores import graph_scores

from exp_tiny import random_tokens, tiny
from graph_support import random_transcoders


def test_scores_by_hand():
    # Nodes: 0 feature f, 1 error e, 2 token t, 3 logit l. Edges: l <- f (2), l <- e (-1), f <- t (3), f <- e (1).
    a = torch.zeros(4, 4)
    a[3, 0], a[3, 1], a[0, 2], a[0, 1] = 2.0, -1.0, 3.0, 1.0
    is_error = torch.tensor([False, True, False, False])
    is_token = torch.tensor([False, False, True, False])
    w = torch.tensor([0.0, 0.0, 0.0, 1.0])
    # Influence: f 2/3; e 1/3 + 2/3 * 1/4 = 1/2; t 2/3 * 3/4 = 1/2 -> replacement 1/2.
    # Complete shares: l 2/3, f 3/4, e and t 1 (no inputs); weights I + w: f 2/3, e 1/2, t 1/2, l 1 (sum 8/3):
    # (2/3 * 3/4 + 1/2 + 1/2 + 2/3) / (8/3) = 13/16.
    replacement, completeness = graph_scores(a, is_error, is_token, w, depth=4)
    assert abs(replacement - 0.5) < 1e-6 and abs(completeness - 13 / 16) < 1e-6
    a[:, 1] = 0.0  # no error edges: both scores 1
    assert graph_scores(a, is_error, is_token, w, depth=4) == (1.0, 1.0)


def test_scores_in_the_result_and_perfect_transcoders_score_one():
    from lens_core.experiments import AttributionGraphRequest, attribution_graph

    model = tiny("gpt2", True)
    tset = random_transcoders(model)
    ids = tuple(random_tokens(8, seed=2)[0].tolist())
    result = attribution_graph(model, AttributionGraphRequest(tokens=ids, check_top=0), transcoders=tset)
    for score in (result.replacement_score, result.completeness_score, result.pruned_replacement_score,
                  result.pruned_completeness_score):
        assert 0.0 <= score <= 1.0
    assert result.replacement_score < 0.99  # random transcoders leave large errors
    # The same graph with every error edge removed scores 1 (the scores read only the error columns).
    from lens_core.experiments.graphs._graph_prune import logit_weights
    from lens_core.experiments.graphs._replacement import build_graph

    graph = build_graph(model, tset, torch.tensor([ids]))
    kinds = graph.kinds()
    is_error = torch.tensor([k == "error" for k in kinds])
    is_token = torch.tensor([k == "embedding" for k in kinds])
    adjacency = graph.adjacency.clone()
    adjacency[:, is_error] = 0
    assert graph_scores(adjacency, is_error, is_token, logit_weights(graph), 5) == (1.0, 1.0)
    got = graph_scores(graph.adjacency, is_error, is_token, logit_weights(graph), graph.n_layers + 2)
    assert abs(got[0] - result.replacement_score) < 1e-6 and abs(got[1] - result.completeness_score) < 1e-6
