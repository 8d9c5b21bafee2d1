"""The graph scores of the attribution-graph method (as circuit-tracer defines them).

With ``A`` the row-normalised |edges| and each node's influence ``I = w @ (A + A^2 + ...)`` from the
logit nodes weighted by their probabilities ``w`` (``_graph_prune``):

- replacement score: the share of the targets' influence that ends at token embeddings rather than error
  nodes, ``sum I[tokens] / (sum I[tokens] + sum I[errors])``: how much of the targets' input flows from the
  tokens through features rather than through what the transcoders miss;
- completeness score: each node's share of incoming (normalised) weight that is not from error nodes,
  ``1 - sum_e A[i, e]``, averaged over the nodes weighted by ``I + w`` (nodes without inputs count as
  complete).

Both are 1 for a graph without error, and lie in [0, 1].
"""

from __future__ import annotations

import torch

from ._graph_prune import normalized_abs, path_influence


def graph_scores(adjacency: torch.Tensor, is_error: torch.Tensor, is_token: torch.Tensor, weights: torch.Tensor,
                 depth: int) -> tuple[float, float]:
    """(replacement score, completeness score) of a graph: ``adjacency [n, n]`` (target rows, source columns),
    boolean masks of its error and token-embedding nodes, ``weights [n]`` on the logit nodes."""
    normalized = normalized_abs(adjacency.float())
    weights = weights.float()
    influence = path_influence(normalized, weights, depth)
    tokens, errors = float(influence[is_token].sum()), float(influence[is_error].sum())
    replacement = tokens / (tokens + errors) if tokens + errors > 0 else 1.0
    complete = 1.0 - normalized[:, is_error].sum(1)
    output = influence + weights
    completeness = float((complete * output).sum() / output.sum()) if float(output.sum()) > 0 else 1.0
    return replacement, completeness
