"""Circuits from edge scores: rank, select, prune to embed -> logits paths, export as JSON.

Works on an :class:`lens_core.experiments.edge_circuits.edges.EdgeAttributionResult` (``scores [S, R]``,
``allowed [S, R]``, labels, ``receiver_owners``); no model needed, so a page can recount a
circuit's edges as the user moves the size slider.

JSON graph (``circuit_json``), schema ``circuit-explorer/circuit-graph@1``::

    {"schema": "circuit-explorer/circuit-graph@1",
     "model": str, "method": "eap" | "eap_ig", "metric": "logit difference at the last position",
     "clean_metric": float, "corrupted_metric": float, "n_prompts": int, "total_edges": int,
     "circuit_metric": float | null,          # exact, from circuit_faithfulness (null if not measured)
     "circuit_normalized": float | null,
     "nodes": [{"id": str,                    # "embed", "L{l}H{h}", "MLP{l}", "logits"
                "kind": "embed" | "head" | "mlp" | "logits",
                "layer": int | null, "head": int | null}],
     "edges": [{"source": str, "target": str, # node ids
                "input": "q" | "k" | "v" | "mlp" | "logits",   # which input of the target
                "receiver": str,              # the receiver label, e.g. "L1H3.k" or "L1KV0.k" (grouped-query)
                "score": float}]}             # EAP/EAP-IG score: estimated metric change if this edge
                                              # alone carried the corrupted value (logit-difference units)
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def rank_edges(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Flat indices into ``[S, R]`` of the graph's edges, by decreasing ``|score|``."""
    flat = scores.abs().flatten().masked_fill(~allowed.flatten(), -1.0)
    order = flat.argsort(descending=True, stable=True)
    return order[: int(allowed.sum())]


def prune(kept: torch.Tensor, receiver_owners: Sequence[Sequence[int]]) -> torch.Tensor:
    """Keep only edges on some path from ``embed`` (sender 0) to ``logits`` (the last receiver)."""
    S, R = kept.shape
    owns = torch.zeros(R, S, dtype=torch.bool)  # owns[r, s]: r is one of sender s's inputs
    for r, owners in enumerate(receiver_owners):
        owns[r, list(owners)] = True
    kept = kept.bool().cpu()
    fed = torch.zeros(S, dtype=torch.bool)
    fed[0] = True
    useful_receiver = torch.zeros(R, dtype=torch.bool)
    useful_receiver[R - 1] = True
    for _ in range(S + 1):  # fixed points; a path is at most S edges long
        fed_receiver = (kept & fed[:, None]).any(0)
        new_fed = (owns & fed_receiver[:, None]).any(0)
        new_fed[0] = True
        useful_sender = (kept & useful_receiver[None, :]).any(1)
        new_useful = (owns & useful_sender[None, :]).any(1)
        new_useful[R - 1] = True
        if torch.equal(new_fed, fed) and torch.equal(new_useful, useful_receiver):
            break
        fed, useful_receiver = new_fed, new_useful
    return kept & fed[:, None] & useful_receiver[None, :]


def top_circuit(scores: torch.Tensor, allowed: torch.Tensor, receiver_owners, n_edges: int,
                order: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, int]:
    """The circuit of at most ``n_edges`` edges taken from the top of the ranking: (mask, prefix length).

    Pruning drops edges that lie on no embed -> logits path, so the mask is ``prune(top k)`` for
    the largest ``k`` whose pruned circuit still has at most ``n_edges`` edges (the pruned size
    only grows with ``k``, so a binary search finds it)."""
    order = rank_edges(scores, allowed) if order is None else order

    def pruned(k: int) -> torch.Tensor:
        kept = torch.zeros_like(allowed)
        kept.view(-1)[order[:k]] = True
        return prune(kept, receiver_owners)

    low, high = n_edges, len(order)  # pruned(low) has at most n_edges edges
    best = pruned(low)
    while low < high:
        middle = (low + high + 1) // 2
        candidate = pruned(middle)
        if int(candidate.sum()) <= n_edges:
            low, best = middle, candidate
        else:
            high = middle - 1
    return best, low


def select_circuit(result, n_edges: Optional[int] = None, threshold: Optional[float] = None) -> torch.Tensor:
    """``[S, R]`` bool: a circuit of at most ``n_edges`` edges from the top of the ``|score|`` ranking
    (see :func:`top_circuit`), or the edges with ``|score| >= threshold``; either way only edges on
    a path from the embeddings to the logits."""
    if (n_edges is None) == (threshold is None):
        raise ValueError("give exactly one of n_edges or threshold")
    total = result.n_edges
    kept = torch.zeros_like(result.allowed)
    if n_edges is not None:
        if not 1 <= n_edges <= total:
            raise ValueError(f"the circuit size must be between 1 and the graph's {total} edges, got {n_edges}")
        return top_circuit(result.scores, result.allowed, result.receiver_owners, n_edges)[0]
    else:
        if not threshold >= 0:
            raise ValueError(f"the score threshold must be a number >= 0, got {threshold}")
        kept = result.allowed & (result.scores.abs() >= threshold)
    return prune(kept, result.receiver_owners)


def edge_table(result, mask: Optional[torch.Tensor] = None) -> list[dict]:
    """The edges (all, or those in ``mask``) as rows ``{sender, receiver, score}``, by decreasing ``|score|``."""
    keep = result.allowed if mask is None else (mask & result.allowed)
    rows = []
    for flat in rank_edges(result.scores, keep).tolist():
        s, r = divmod(flat, result.allowed.shape[1])
        rows.append({"sender": result.senders[s], "receiver": result.receivers[r], "score": float(result.scores[s, r]),
                     "sender_index": s, "receiver_index": r})
    return rows


def node_of_sender(label: str) -> dict:
    if label == "embed":
        return {"id": "embed", "kind": "embed", "layer": None, "head": None}
    if label.startswith("MLP"):
        return {"id": label, "kind": "mlp", "layer": int(label[3:]), "head": None}
    layer, head = label[1:].split("H")
    return {"id": label, "kind": "head", "layer": int(layer), "head": int(head)}


def receiver_target(result, receiver: int) -> tuple[list[str], str]:
    """(node ids that read through this receiver, input kind)."""
    label = result.receivers[receiver]
    if label == "logits":
        return ["logits"], "logits"
    if label.endswith(".in"):
        return [label[:-3]], "mlp"
    return [result.senders[s] for s in result.receiver_owners[receiver]], label.rsplit(".", 1)[1]


def circuit_json(result, mask: torch.Tensor, model_name: str = "", circuit_metric: Optional[float] = None,
                 circuit_normalized: Optional[float] = None) -> dict:
    """The circuit ``mask`` as a JSON-able graph (schema in the module docstring). A key/value receiver
    shared by several heads (grouped-query attention) gives one edge per head."""
    nodes: dict[str, dict] = {}
    edges = []
    for row in edge_table(result, mask):
        source = node_of_sender(row["sender"])
        nodes.setdefault(source["id"], source)
        targets, kind = receiver_target(result, row["receiver_index"])
        for target in targets:
            nodes.setdefault(target, {"id": "logits", "kind": "logits", "layer": None, "head": None}
                             if target == "logits" else node_of_sender(target))
            edges.append({"source": source["id"], "target": target, "input": kind, "receiver": row["receiver"],
                          "score": row["score"]})
    return {
        "schema": "circuit-explorer/circuit-graph@1", "model": model_name, "method": result.method,
        "metric": "logit difference at the last position", "clean_metric": result.clean_metric,
        "corrupted_metric": result.corrupted_metric, "n_prompts": result.n_prompts, "total_edges": result.n_edges,
        "circuit_metric": circuit_metric, "circuit_normalized": circuit_normalized,
        "nodes": list(nodes.values()), "edges": edges,
    }
