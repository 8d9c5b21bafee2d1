"""A clicked edge of the attribution graph as a choice for the QK explanation (``ui.qk_view``): which head and which
query and key positions explain it. Pure: the graph's result and the prompt's attention patterns in, a choice out.

An edge from a node at position j to a node at position i > j can only cross positions through attention: a head of
a layer after the source is written (embeddings: every layer; a feature or error of layer l: from layer l + 1) and no
later than the target reads (a feature or error of layer l reads after layer l's attention; the logits after the
last layer). Of those heads, the one that attends most from i to j (the clean run's pattern, which the graph freezes)
is picked. An edge within one position is not told apart by attention; it picks nothing.
"""

from __future__ import annotations

from typing import Any, Optional

from lens_core.experiments.graphs.graph_json import node_ids

QK_KEYS = ("qk_layer", "qk_head", "qk_query", "qk_key")


def edge_qk_choice(result: Any, edge_id: str, patterns: Any) -> tuple[Optional[dict], str]:
    """(choice {qk_layer, qk_head, qk_query, qk_key} or None, a sentence saying what was picked or why not).
    ``edge_id``: ``"source->target"`` of the chart; ``patterns``: ``[layer, head, query, key]`` of the prompt."""
    ids = node_ids(result)
    source, _, target = str(edge_id).partition("->")
    if source not in ids or target not in ids:
        return None, "That edge is not in this graph any more (other prompt or thresholds): pick head and positions below."
    s, t = ids.index(source), ids.index(target)
    j, i = int(result.node_pos[s]), int(result.node_pos[t])
    if j == i:
        return None, (f"That edge stays at position {i}: attention does not carry it from another token, so it picks no "
                      "head. Click an edge between two positions, or pick head and positions below.")
    if j > i:  # not possible in a causal graph; refuse rather than guess
        return None, "That edge goes from a later position to an earlier one: pick head and positions below."
    n_layers = int(result.n_layers)
    kind_s, kind_t = result.node_kind[s], result.node_kind[t]
    first = 0 if kind_s == "embedding" else int(result.node_layer[s]) + 1
    last = n_layers - 1 if kind_t == "logit" else int(result.node_layer[t])
    if first > last:
        return None, "No attention layer lies between that edge's nodes: pick head and positions below."
    weights = patterns[first:last + 1, :, i, j]  # [layers, heads]
    flat = int(weights.reshape(-1).argmax())
    layer, head = first + flat // weights.shape[1], flat % weights.shape[1]
    weight = float(weights.reshape(-1)[flat])
    span = f"layer {first}" if first == last else f"layers {first}–{last}"
    return ({"qk_layer": layer, "qk_head": head, "qk_query": i, "qk_key": j},
            f"The clicked edge crosses from position {j} to position {i}, so attention in {span} carries it; of those "
            f"heads L{layer}H{head} attends most from {i} to {j} (weight {weight:.2f}). Its QK explanation is below.")
