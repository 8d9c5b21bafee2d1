"""Influence on the logits, pruning, and the graph's predicted effect of an intervention.

Influence (as published with the attribution-graph method): make every edge weight
positive and each target's incoming weights sum to one (``A_norm``); then a node's
influence on the logits is the sum over all paths ``w @ (A_norm + A_norm^2 + ...)``, with
``w`` the logit nodes' probabilities (normalised to sum to one). The graph is a DAG of
depth at most ``n_layers + 2``, so the series ends after that many terms.

Pruning keeps the nodes that account for ``node_threshold`` of the total influence
(embeddings and logits always stay), then the edges that account for ``edge_threshold``
of the edge influence (edge score = its normalised weight times its target's influence
plus logit weight), then drops features and errors left with no outgoing edge and features
left with no incoming edge, until nothing changes.
"""

from __future__ import annotations

import torch

from ._replacement import ReplacementGraph


def normalized_abs(adjacency: torch.Tensor) -> torch.Tensor:
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp_min(1e-12)


def path_influence(normalized: torch.Tensor, weights: torch.Tensor, depth: int) -> torch.Tensor:
    """``weights @ (A + A^2 + ... )`` over at most ``depth`` steps: each node's influence [n_nodes]."""
    current = weights @ normalized
    total = current.clone()
    for _ in range(depth):
        current = current @ normalized
        if not bool(current.any()):
            break
        total += current
    return total


def cumulative_cut(scores: torch.Tensor, share: float) -> float:
    """The smallest score among the top scores that together reach ``share`` of the total."""
    flat = scores.flatten()
    flat = flat[flat > 0]  # zeros never change the cumulative share (and most edges are structural zeros)
    if flat.numel() == 0:
        return float("inf")
    ordered = flat.sort(descending=True).values
    total = float(ordered.sum())
    if total <= 0:
        return float("inf")
    cumulative = ordered.cumsum(0) / total
    index = int(torch.searchsorted(cumulative, torch.tensor(float(share), dtype=cumulative.dtype)))
    return float(ordered[min(index, ordered.numel() - 1)])


def logit_weights(graph: ReplacementGraph) -> torch.Tensor:
    weights = torch.zeros(graph.n_nodes)
    probs = graph.logit_probs.float()
    weights[graph.logit_node(0):] = probs / probs.sum().clamp_min(1e-12)
    return weights


def node_influence(graph: ReplacementGraph) -> torch.Tensor:
    return path_influence(normalized_abs(graph.adjacency), logit_weights(graph), graph.n_layers + 2)


def _row_normalized_influence(adjacency: torch.Tensor, weights: torch.Tensor, depth: int) -> torch.Tensor:
    """``path_influence(normalized_abs(adjacency))`` without materialising the normalised matrix (the full
    graph is large): ``x @ (|A| / rowsum) == (x / rowsum) @ |A|``."""
    a = adjacency.abs()
    inv = 1.0 / a.sum(1).clamp_min(1e-12)
    current = (weights * inv) @ a
    total = current.clone()
    for _ in range(depth):
        current = (current * inv) @ a
        if not bool(current.any()):
            break
        total += current
    return total


def prune(graph: ReplacementGraph, node_threshold: float = 0.8, edge_threshold: float = 0.98):
    """(node mask [n_nodes], edge mask [n_nodes, n_nodes], node influence [n_nodes])."""
    for name, value in (("node threshold", node_threshold), ("edge threshold", edge_threshold)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
    weights = logit_weights(graph)
    depth = graph.n_layers + 2
    influence = _row_normalized_influence(graph.adjacency, weights, depth)
    keep = influence >= cumulative_cut(influence, node_threshold)
    keep[graph.embedding_node(0):] = True  # embeddings and logits always stay

    # Edges among the kept nodes only: the same computation on the (much smaller) kept submatrix.
    kept = keep.nonzero()[:, 0]
    sub = graph.adjacency[kept][:, kept]
    normalized = normalized_abs(sub)
    sub_weights = weights[kept]
    edge_scores = normalized * (path_influence(normalized, sub_weights, depth) + sub_weights)[:, None]
    sub_edges = (edge_scores >= cumulative_cut(edge_scores, edge_threshold)) & (sub != 0)
    sub_keep = torch.ones(kept.numel(), dtype=torch.bool)
    is_feature = kept < graph.n_features
    is_inner = kept < graph.embedding_node(0)  # features and errors come before embeddings
    while True:
        sub_edges &= sub_keep[:, None] & sub_keep[None, :]
        before = int(sub_keep.sum())
        sub_keep &= ~is_inner | sub_edges.any(0)  # features and errors need an outgoing edge
        sub_keep &= ~is_feature | sub_edges.any(1)  # features need an incoming edge
        if int(sub_keep.sum()) == before:
            break
    keep = torch.zeros(graph.n_nodes, dtype=torch.bool)
    keep[kept[sub_keep]] = True
    edges = torch.zeros(graph.n_nodes, graph.n_nodes, dtype=torch.bool)
    edges[kept[:, None], kept[None, :]] = sub_edges
    return keep, edges, influence


def predicted_effects(graph: ReplacementGraph, clamps: list[list[tuple[int, float]]]) -> torch.Tensor:
    """The graph's prediction of each node input's change [n_nodes, m] for m intervention sets.

    Each set clamps feature nodes (node index, new activation). Other active features respond
    linearly (an active feature's activation is its pre-activation); errors, embeddings and
    attention stay as they were: the frozen replacement model's answer.
    """
    n_feat = graph.n_features
    act = graph.activations.float().clamp_min(1e-12)
    to_feat = graph.adjacency[:, :n_feat]  # a view; an edge is activation * (effect of one unit)
    m = len(clamps)
    fixed = torch.zeros(n_feat, m, dtype=torch.bool)
    fixed_delta = torch.zeros(n_feat, m)
    for j, items in enumerate(clamps):
        for node, value in items:
            if not 0 <= node < n_feat:
                raise ValueError(f"node {node} is not a feature node of this graph")
            fixed[node, j] = True
            fixed_delta[node, j] = float(value) - float(graph.activations[node])
    delta = fixed_delta.clone()
    for _ in range(graph.n_layers + 1):
        delta = torch.where(fixed, fixed_delta, to_feat[:n_feat] @ (delta / act[:, None]))
    return to_feat @ (delta / act[:, None])
