"""A feature-node budget: the graph's rows computed most influential first, stored sparse.

The full graph of a long prompt has too many active features for a dense nodes x nodes matrix (and every
feature is a backward row). ``expand_graph`` computes rows greedily instead:

1. the target logits' rows (one batch);
2. the influence estimate from the rows computed so far (``_graph_prune``'s influence: paths through the
   normalised |edges| from the logits, weighted by their probabilities; a node whose row is not computed
   yet passes nothing on), then the rows of the ``batch_size`` most influential features not yet expanded;
3. repeat 2 until ``max_feature_nodes`` features are expanded, no candidate has influence left, or the
   expanded features hold ``influence_share`` of the estimated influence of all features.

Each computed row is exact (the same backward walk as the dense graph; only the batch composition
differs, so edges agree to float rounding). Errors, token embeddings and the targets are always nodes.
The graph returned keeps the expanded features; an edge from a feature left out is dropped and its sum
per row is ``ReplacementGraph.dropped`` (so input = edges + bias + dropped still holds exactly).

Memory, bounded and stated (``memory_bound_bytes``): with ``N`` nodes in the full graph, ``F`` the budget,
``L`` the targets, ``B`` the batch, ``K = F + n_layers * pos + pos + L`` the kept nodes: rows are stored
sparse (int32 row and column, float32 value and normalised |value|: 16 bytes per nonzero edge, at most
``16 (F + L) N``), one dense batch of ``4 B N`` bytes is in flight, the influence estimate's dense block of the
expanded nodes (at most ``4 (F + L)^2`` bytes) lives only during each estimate, and the kept graph is dense
``4 K^2`` bytes: never ``N^2``.
When every feature fits the budget and the full graph fits ``max_nodes``, the dense graph is built as
before (``fill_dense``), bit for bit the graph without a budget.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch

from ._replacement import DEFAULT_MAX_NODES, ReplacementGraph, Walk, fill_dense, prepare_walk
from ._targets import node_budget_error


@dataclasses.dataclass
class Expansion:
    graph: ReplacementGraph  # the kept nodes (all of them, dense, when nothing was left out)
    full_nodes: int  # nodes of the full graph
    full_features: int  # active features of the full graph
    expanded: bool  # True: the greedy expansion ran (else the dense graph)
    computed_edges: int  # nonzero edges among the computed rows (of the full graph)
    memory_bound_bytes: int  # the bound above, for these sizes
    notice: Optional[str]  # why features were left out, in words; None when none were


def memory_bound(n_nodes: int, budget: int, n_logits: int, batch: int, kept: int) -> int:
    return 16 * (budget + n_logits) * n_nodes + 4 * batch * n_nodes + 4 * kept * kept


def _influence(chunks: list, expanded: torch.Tensor, weights: torch.Tensor, depth: int) -> torch.Tensor:
    """``weights @ (A + A^2 + ... + A^depth)`` with ``A`` the row-normalised |edges| of the computed rows.

    ``chunks``: (rows, cols, normalised |value|) per computed batch (COO). Only expanded nodes have rows, so a
    path's every step but its last runs inside the expanded block ``A_EE`` (dense, ``K x K``): with
    ``x_k = weights @ A^k`` (nonzero on expanded nodes only for propagation), ``s = sum_{k<depth} x_k|E`` takes
    ``depth - 1`` dense products of size ``K``, and the answer is ``s @ A``: one pass over the stored edges,
    instead of ``depth`` passes (the same sum; only the order of float additions differs)."""
    E = expanded.nonzero()[:, 0]
    slot = torch.full_like(expanded, -1, dtype=torch.long)
    slot[E] = torch.arange(E.numel(), device=E.device)
    K = E.numel()
    block = torch.zeros(K, K, device=weights.device)
    for r, c, nv in chunks:
        sc = slot[c]
        inside = sc >= 0
        block[slot[r[inside]], sc[inside]] = nv[inside]
    x = weights[E]
    s = x.clone()
    for _ in range(depth - 1):
        x = x @ block
        if not bool(x.any()):
            break
        s += x
    del block
    s_all = torch.zeros_like(weights)
    s_all[E] = s
    total = torch.zeros_like(weights)
    for r, c, nv in chunks:
        total.index_add_(0, c, s_all[r] * nv)
    return total


@torch.no_grad()
def expand_graph(model, transcoders, tokens: torch.Tensor, targets: Optional[Sequence[int]] = None,
                 logit_mass: float = 0.95, max_logits: int = 10, max_feature_nodes: Optional[int] = 4096,
                 influence_share: float = 1.0, batch_size: int = 256, max_nodes: int = DEFAULT_MAX_NODES,
                 dense_if_fits: bool = True, minus: Optional[int] = None, zero_bos: bool = False,
                 progress: Optional[Callable[[int, int], None]] = None) -> Expansion:
    """The graph of ``tokens [1, pos]`` within ``max_feature_nodes`` feature nodes (see the module docstring).
    ``max_feature_nodes=None``: no budget (the dense graph, refused over ``max_nodes`` as before). ``minus``: the
    target is the direction logit(targets[0]) - logit(minus). ``progress(rows done, rows planned)`` is called after
    each batch of backward rows (the planned count is every row the graph can need: the budget's features and the
    targets; the greedy expansion may stop earlier, and then reports the planned count at the end).
    ``zero_bos``: circuit-tracer's position 0 (``_replacement.prepare_walk``)."""
    if max_feature_nodes is not None and int(max_feature_nodes) < 0:
        raise ValueError(f"the feature-node budget must be 0 or more, got {max_feature_nodes}")
    if not 0.0 < influence_share <= 1.0:
        raise ValueError(f"the influence share must be in (0, 1], got {influence_share}")
    walk = prepare_walk(model, transcoders, tokens, targets, logit_mass, max_logits, minus, zero_bos)
    g = walk.partial
    if max_feature_nodes is None and g.n_nodes > max_nodes:  # no budget: the dense graph or a refusal, as before
        raise ValueError(node_budget_error(g.n_nodes, max_nodes, g.n_pos, g.n_nodes / g.n_pos))
    budget = g.n_features if max_feature_nodes is None else min(int(max_feature_nodes), g.n_features)
    planned = budget + g.n_logits
    walk = _reporting(walk, planned, progress)
    if max_feature_nodes is None or (dense_if_fits and g.n_features <= budget and g.n_nodes <= max_nodes):
        graph = fill_dense(walk, batch_size)
        return Expansion(graph, graph.n_nodes, graph.n_features, False, int((graph.adjacency != 0).sum()),
                         4 * graph.n_nodes ** 2, None)
    expansion = _greedy(walk, budget, influence_share, max(1, int(batch_size)))
    if progress is not None:
        progress(planned, planned)
    return expansion


def _reporting(walk: Walk, planned: int, progress: Optional[Callable[[int, int], None]]) -> Walk:
    """The walk, with ``progress(rows done, planned)`` called after each batch of rows."""
    if progress is None:
        return walk
    done = [0]
    rows = walk.rows

    def counted(L: int, idx: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        bias = rows(L, idx, out)
        done[0] += int(idx.numel())
        progress(min(done[0], planned), planned)
        return bias

    return dataclasses.replace(walk, rows=counted)


def _greedy(walk: Walk, budget: int, share: float, batch: int) -> Expansion:
    g, device = walk.partial, walk.device
    N, F, n, logit0 = g.n_nodes, g.n_features, g.n_layers, g.logit_node(0)
    layer_of = g.feature_layer.to(device)
    chunks, vals, row_nodes, biases = [], [], [], []  # chunks: (rows, cols, normalised |value|) per batch
    expanded = torch.zeros(N, dtype=torch.bool, device=device)

    def compute(L: int, idx: torch.Tensor, nodes: torch.Tensor) -> None:
        out = torch.zeros(idx.numel(), N, device=device)
        biases.append(walk.rows(L, idx, out))
        r, c = out.nonzero(as_tuple=True)
        v = out[r, c]
        row_sum = out.abs().sum(1).clamp_min(1e-12)  # a row is complete when computed: normalise it once
        chunks.append((nodes[r].to(torch.int32), c.to(torch.int32), v.abs() / row_sum[r]))
        vals.append(v)
        row_nodes.append(nodes)
        expanded[nodes] = True

    n_logits = g.n_logits
    compute(n, torch.arange(n_logits, device=device), torch.arange(logit0, N, device=device))
    weights = torch.zeros(N, device=device)
    probs = g.logit_probs.float().to(device)
    weights[logit0:] = probs / probs.sum().clamp_min(1e-12)
    depth, done, reason = n + 2, 0, None
    while True:
        if done >= budget:
            reason = "budget" if budget < F else None
            break
        influence = _influence(chunks, expanded, weights, depth)[:F]
        total = float(influence.sum())
        if share < 1.0 and total > 0 and float(influence[expanded[:F]].sum()) >= share * total:
            reason = "share"
            break
        candidate = torch.where(expanded[:F], torch.full_like(influence, -1.0), influence)
        take = min(batch, budget - done)
        top = candidate.topk(take)
        chosen = top.indices[top.values > 0]
        if chosen.numel() == 0:  # nothing left has any influence on the targets
            reason = "no influence" if done < F else None
            break
        for L in range(n):
            nodes = chosen[layer_of[chosen] == L].sort().values
            if nodes.numel():
                compute(L, nodes, nodes)
        done += int(chosen.numel())
    R = torch.cat([c[0] for c in chunks])
    C = torch.cat([c[1] for c in chunks])
    chunks.clear()
    return _kept_graph(g, R, C, torch.cat(vals), torch.cat(row_nodes), torch.cat(biases), expanded, budget, batch,
                       reason, share)


def _kept_graph(g: ReplacementGraph, R, C, V, row_nodes, biases, expanded, budget, batch, reason, share) -> Expansion:
    N, F = g.n_nodes, g.n_features
    keep = expanded.clone()
    keep[F:] = True  # errors, embeddings, targets
    kept = keep.nonzero()[:, 0]
    new = torch.full((N,), -1, dtype=torch.long, device=keep.device)
    new[kept] = torch.arange(kept.numel(), device=keep.device)
    K = kept.numel()
    adjacency = torch.zeros(K, K, device=keep.device)
    inside = new[C] >= 0
    adjacency.index_put_((new[R[inside]], new[C[inside]]), V[inside], accumulate=True)
    dropped = torch.zeros(K, device=keep.device).index_add_(0, new[R[~inside]], V[~inside])
    node_bias = torch.zeros(K, device=keep.device)
    node_bias[new[row_nodes]] = biases
    feats = kept[kept < F].cpu()
    graph = ReplacementGraph(
        tokens=g.tokens, feature_layer=g.feature_layer[feats], feature_pos=g.feature_pos[feats],
        feature_index=g.feature_index[feats], activations=g.activations[feats], logit_tokens=g.logit_tokens,
        logit_probs=g.logit_probs, adjacency=adjacency.cpu(), node_input=g.node_input[kept.cpu()],
        node_bias=node_bias.cpu(), n_layers=g.n_layers, dropped=dropped.cpu(), logit_minus=g.logit_minus,
    )
    n_kept = int(feats.numel())
    notice = None
    if n_kept < F:
        why = {"budget": f"the feature-node budget of {budget}",
               "share": f"the expanded features hold {share:.0%} of the estimated influence",
               "no influence": "the other features have no influence on the targets"}.get(reason, "the budget")
        notice = (f"This prompt has {F} active features; the graph keeps the {n_kept} most influential ({why}). "
                  f"Edges from the {F - n_kept} left out are not drawn; their input to each node is counted apart.")
    bound = memory_bound(N, budget, g.n_logits, batch, K)
    return Expansion(graph, N, F, True, int(V.ne(0).sum()), bound, notice)
