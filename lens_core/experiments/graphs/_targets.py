"""The graph's target logits, and the message for a graph over the dense node limit."""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def select_logits(probs: torch.Tensor, targets: Optional[Sequence[int]], mass: float, max_logits: int) -> torch.Tensor:
    """The chosen target tokens, or the most probable tokens until their probability reaches ``mass``."""
    if targets:
        return torch.as_tensor(list(dict.fromkeys(int(t) for t in targets)), dtype=torch.long)  # once each, in order
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"logit probability mass must be in (0, 1], got {mass}")
    ordered, ids = probs.sort(descending=True)
    n = int((ordered.cumsum(0) < mass).sum()) + 1
    return ids[: max(1, min(n, int(max_logits)))].cpu()


def node_budget_error(n_nodes: int, max_nodes: int, n_pos: int, per_pos: float) -> str:
    fit = max(1, int(max_nodes / max(per_pos, 1.0)))
    mib = max_nodes * max_nodes * 4 / 2**20
    return (
        f"this prompt's graph has {n_nodes} nodes, over the budget of {max_nodes}: the graph keeps a dense "
        f"nodes x nodes matrix of edge weights ({mib:.0f} MiB at the budget) and every node is a backward row. "
        f"With about {per_pos:.0f} nodes per token here, prompts up to about {fit} tokens fit (this one has {n_pos})."
    )
