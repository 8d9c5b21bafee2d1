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


def prune(graph: ReplacementGraph, node_threshold: float = 0.8, edge_threshold: float = 0.98):
    """(node mask [n_nodes], edge mask [n_nodes, n_nodes], node influence [n_nodes])."""
    for name, value in (("node threshold", node_threshold), ("edge threshold", edge_threshold)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
    weights = logit_weights(graph)
    depth = graph.n_layers + 2
    influence = path_influence(normalized_abs(graph.adjacency), weights, depth)
    keep = influence >= cumulative_cut(influence, node_threshold)
    always = torch.zeros(graph.n_nodes, dtype=torch.bool)
    always[graph.embedding_node(0):] = True  # embeddings and logits
    keep |= always

    pruned = graph.adjacency * keep[:, None] * keep[None, :]
    normalized = normalized_abs(pruned)
    edge_scores = normalized * (path_influence(normalized, weights, depth) + weights)[:, None]
    edges = edge_scores >= cumulative_cut(edge_scores, edge_threshold)
    edges &= pruned != 0
    n_feat, inner = graph.n_features, graph.embedding_node(0)  # features and errors come before embeddings
    while True:
        edges &= keep[:, None] & keep[None, :]
        before = int(keep.sum())
        keep[:inner] &= edges[:, :inner].any(0)  # features and errors need an outgoing edge
        keep[:n_feat] &= edges[:n_feat].any(1)  # features need an incoming edge
        if int(keep.sum()) == before:
            break
    return keep, edges, influence


def predicted_effects(graph: ReplacementGraph, clamps: list[list[tuple[int, float]]]) -> torch.Tensor:
    """The graph's prediction of each node input's change [n_nodes, m] for m intervention sets.

    Each set clamps feature nodes (node index, new activation). Other active features respond
    linearly (an active feature's activation is its pre-activation); errors, embeddings and
    attention stay as they were: the frozen replacement model's answer.
    """
    n_feat = graph.n_features
    act = graph.activations.float().clamp_min(1e-12)
    per_unit = graph.adjacency[:, :n_feat] / act[None, :]  # effect of one unit of each feature's activation
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
        delta = torch.where(fixed, fixed_delta, per_unit[:n_feat] @ delta)
    return per_unit @ delta
