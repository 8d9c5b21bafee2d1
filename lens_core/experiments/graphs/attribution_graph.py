"""Attribution graphs: the bundled model with transcoders instead of MLPs, made linear, as a pruned graph.

``attribution_graph(model, request)`` builds the full graph of the prompt at its last
position (``_replacement.build_graph``: active features, one error node per layer and
position, token embeddings, target logits; exact edges of the frozen replacement model),
prunes it by influence on the logits (``_graph_prune``), and checks it: the top
``check_top`` features by influence are each zeroed in the real model (attention not
frozen, one batch) and the change of the first target's demeaned logit is compared with the
graph's prediction (Pearson correlation reported). The same zeroing with the clean attention
patterns and norm scales frozen (the graph's assumptions; the MLPs stay real) is reported beside
it: it separates the graph's own error (transcoders vs MLPs, features switching on or off) from
what attention and normalization add.

The result holds the kept nodes and the kept edges among them, each node's input, bias and
influence, the largest completeness error of the full graph (input minus the sum of incoming
edges and bias; float rounding only), and the check.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import torch

from lens_core.results import ExperimentResult

from .._common import TokenLike, resolve_token, resolve_tokens, str_tokens
from ._graph_prune import logit_weights, predicted_effects, prune
from ._scores import graph_scores
from ._expand import expand_graph
from ._replacement import DEFAULT_MAX_NODES, ReplacementGraph
from .full_path_check import graph_check_predictions
from .graph_interventions import demeaned, run_interventions


@dataclasses.dataclass(frozen=True)
class AttributionGraphRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    targets: tuple[TokenLike, ...] = ()  # target logits; empty: the top predictions covering logit_mass
    direction: tuple[TokenLike, ...] = ()  # (x, y): the one target is logit(x) - logit(y) (contrast prompts)
    logit_mass: float = 0.95
    max_logits: int = 10
    node_threshold: float = 0.8
    edge_threshold: float = 0.98
    check_top: int = 20  # features zeroed one at a time in the real model (0: no check)
    max_nodes: int = DEFAULT_MAX_NODES  # without a feature budget: the dense graph's limit (refused over it)
    max_feature_nodes: Optional[int] = 4096  # feature-node budget, expanded most influential first; None: off
    influence_share: float = 1.0  # or stop once the expanded features hold this share of the influence
    transcoders: str = "bundled"  # which transcoders (the fingerprint, from the page, keys the cache)
    zero_bos: bool = False  # circuit-tracer's convention: no features and an empty error node at position 0


@dataclasses.dataclass
class AttributionGraphResult(ExperimentResult):
    kind = "attribution_graph"
    # Kept nodes, in graph order (features by layer/pos, errors, embeddings, logits).
    node_kind: list  # "feature" | "error" | "embedding" | "logit"
    node_layer: list  # feature/error layer; -1 embeddings; n_layers logits
    node_pos: list
    node_feature: list  # feature index; -1 errors; token id for embeddings and logits
    node_activation: torch.Tensor  # [k] features: activation; errors: norm of the error vector; else 0/prob
    node_influence: torch.Tensor  # [k] influence on the logits (path sum of normalised |edges|)
    node_input: torch.Tensor  # [k]
    node_bias: torch.Tensor  # [k]
    adjacency: torch.Tensor  # [k, k] kept edges (target row, source column); pruned edges are 0
    logit_ids: list  # a direction: [x]
    logit_tokens: list  # a direction: ["x - y"]
    logit_probs: list  # a direction: [p(x)]
    str_tokens: list
    token_ids: list
    n_layers: int
    full_nodes: int
    full_features: int
    full_edges: int  # nonzero edges of the full graph (with features left out by the budget: of the rows computed)
    completeness_error: float  # max |input - sum(edges) - bias - left-out input| over the feature and logit nodes
    check_nodes: list  # indices into the kept nodes of the features checked
    check_predicted: torch.Tensor  # [c] graph's predicted change of the first target's demeaned logit when zeroed
    check_direct: torch.Tensor  # [c] the direct edge alone (minus the edge weight)
    check_actual: torch.Tensor  # [c] real model, attention not frozen
    check_correlation: Optional[float]  # Pearson(predicted, actual); None below 3 features
    check_actual_frozen: torch.Tensor  # [c] real model, clean attention patterns and norm scales (the graph's assumptions)
    check_correlation_frozen: Optional[float]  # Pearson(predicted, actual with patterns and scales frozen)
    settings: dict
    seconds: dict  # graph, prune, check
    notice: Optional[str] = None  # features left out by the budget, in words; None when the graph is complete
    graph_features: int = 0  # feature nodes of the graph pruned here (all active ones, or the budget's)
    memory_bound_bytes: int = 0  # the bound on the graph build's edge storage (graphs._expand)
    direction: Optional[list] = None  # [x, y] token ids when the target is logit(x) - logit(y)
    # The method's graph scores (graphs._scores): of the graph built (all active features, or the budget's) and
    # of the pruned graph returned here.
    replacement_score: Optional[float] = None
    completeness_score: Optional[float] = None
    pruned_replacement_score: Optional[float] = None
    pruned_completeness_score: Optional[float] = None
    # The same zeroings predicted through every path of the real model, attention moving (graphs.full_path_check:
    # the gradient at the path's midpoint x -activation, one batched backward pass), and Pearson(that, actual).
    check_predicted_full: Optional[torch.Tensor] = None
    check_correlation_full: Optional[float] = None


def _pearson(x: torch.Tensor, y: torch.Tensor) -> Optional[float]:
    if x.numel() < 3:
        return None
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else None


def feature_check(model, tset, tokens, graph: ReplacementGraph, influence: torch.Tensor, top: int):
    """Zero each of the ``top`` most influential features: (nodes, predicted, direct, actual, actual with the
    attention patterns and norm scales frozen) for the first target's demeaned logit."""
    n_feat = graph.n_features
    top = min(int(top), n_feat)
    if top <= 0:
        empty = torch.zeros(0)
        return [], empty, empty, empty, empty
    nodes = influence[:n_feat].topk(top).indices.tolist()
    target = graph.logit_node(0)
    predicted = predicted_effects(graph, [[(i, 0.0)] for i in nodes])[target]
    direct = -graph.adjacency[target, nodes]
    sets = [[]] + [[(int(graph.feature_layer[i]), int(graph.feature_pos[i]), int(graph.feature_index[i]), 0.0)] for i in nodes]
    token, minus = int(graph.logit_tokens[0]), graph.logit_minus
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith(("attn.hook_pattern", "hook_scale")))
    out = []
    for patterns in (None, dict(cache.items())):
        logits = demeaned(run_interventions(model, tset, tokens, sets, patterns, uncapped=True))
        metric = logits[:, token] - (logits[:, minus] if minus is not None else 0.0)
        out.append((metric[1:] - metric[0]).cpu())
    return nodes, predicted, direct, out[0], out[1]


def resolve_targets(model, request) -> tuple[list[int], Optional[int]]:
    """(target token ids, the direction's minus token or None), with clear messages for bad targets."""
    if isinstance(request.targets, (str, int)) or isinstance(request.direction, (str, int)):
        raise ValueError("targets and direction are tuples of tokens, e.g. targets=(' Paris',), direction=(' A', ' B')")
    if not request.direction:
        return [resolve_token(model, t, "target") for t in request.targets], None
    if request.targets:
        raise ValueError("give either target tokens or a direction logit(x) - logit(y), not both")
    if len(request.direction) != 2:
        raise ValueError(f"a direction is two tokens (x, y) for logit(x) - logit(y); got {len(request.direction)}")
    x, y = (resolve_token(model, t, f"direction token {name}") for t, name in zip(request.direction, "xy"))
    if x == y:
        raise ValueError(f"the direction logit(x) - logit(y) is empty: x and y are the same token ({x})")
    return [x], y


def half_precision_notice(model, completeness_error: float) -> Optional[str]:
    """In words, for a model whose forward pass runs in float16/bfloat16; None for float32."""
    dtype = model.W_E.dtype
    if dtype == torch.float32:
        return None
    name = str(dtype).replace("torch.", "")
    return (f"The graph was computed in float32 from the model's {name} forward pass (its cached activations, "
            f"attention patterns and norm scales): each input equals its edges plus bias up to that pass's {name} "
            f"rounding (largest difference {completeness_error:.2g}).")


def attribution_graph(model, request: AttributionGraphRequest, transcoders=None,
                      progress: Optional[Callable[[int, int], None]] = None) -> AttributionGraphResult:
    """``transcoders``: a TranscoderSet to use instead of ``load_transcoders(model)`` (tests, your own).
    ``progress(done, total)``: the graph's backward rows as they are computed, then one step for pruning and the
    real-model check (it does not change the result)."""
    from lens_core.features import load_transcoders

    tokens = resolve_tokens(model, request.prompt, request.tokens)
    tset = transcoders if transcoders is not None else load_transcoders(model)
    targets, minus = resolve_targets(model, request)
    start = time.perf_counter()
    planned = [1]

    def rows_progress(done: int, total: int) -> None:
        planned[0] = total + 1
        progress(done, total + 1)

    expansion = expand_graph(model, tset, tokens, targets or None, request.logit_mass, request.max_logits,
                             request.max_feature_nodes, request.influence_share, max_nodes=request.max_nodes, minus=minus,
                             zero_bos=request.zero_bos, progress=None if progress is None else rows_progress)
    graph = expansion.graph
    built = time.perf_counter()
    keep, edges, influence = prune(graph, request.node_threshold, request.edge_threshold)
    pruned = time.perf_counter()
    nodes, predicted, direct, actual, frozen = feature_check(model, tset, tokens, graph, influence, request.check_top)
    full = graph_check_predictions(model, tset, tokens, graph, nodes)
    checked = time.perf_counter()
    result = package(model, graph, keep, edges, influence, nodes, predicted, direct, actual, frozen, request,
                     {"graph": built - start, "prune": pruned - built, "check": checked - pruned}, expansion)
    result.check_predicted_full, result.check_correlation_full = full.float(), _pearson(full, actual)
    precision = half_precision_notice(model, result.completeness_error)
    if precision:
        result.notice = precision if result.notice is None else f"{result.notice} {precision}"
    if progress is not None:
        progress(planned[0], planned[0])
    return result


def package(model, graph, keep, edges, influence, check_nodes, predicted, direct, actual, frozen, request, seconds,
            expansion):
    rows = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_node(0), graph.n_nodes)])
    residual = graph.node_input - graph.adjacency.sum(1) - graph.node_bias
    if graph.dropped is not None:
        residual = residual - graph.dropped
    residual = residual[rows]
    kinds = graph.kinds()
    kept = keep.nonzero()[:, 0]
    new_index = {int(old): new for new, old in enumerate(kept.tolist())}
    for i in check_nodes:  # the checked features stay in the graph so that the page can show them
        if i not in new_index:
            keep[i] = True
    kept = keep.nonzero()[:, 0]
    new_index = {int(old): new for new, old in enumerate(kept.tolist())}
    n_feat, n, P = graph.n_features, graph.n_layers, graph.n_pos
    layer, pos, feature, activation = [], [], [], torch.zeros(kept.numel())
    for new, old in enumerate(kept.tolist()):
        kind = kinds[old]
        if kind == "feature":
            layer.append(int(graph.feature_layer[old]))
            pos.append(int(graph.feature_pos[old]))
            feature.append(int(graph.feature_index[old]))
            activation[new] = graph.activations[old]
        elif kind == "error":
            e = old - n_feat
            layer.append(e // P)
            pos.append(e % P)
            feature.append(-1)
            activation[new] = graph.adjacency[:, old].abs().sum()  # how much it feeds, as a size cue
        elif kind == "embedding":
            layer.append(-1)
            pos.append(old - graph.embedding_node(0))
            feature.append(int(graph.tokens[pos[-1]]))
        else:
            j = old - graph.logit_node(0)
            layer.append(n)
            pos.append(P - 1)
            feature.append(int(graph.logit_tokens[j]))
            activation[new] = graph.logit_probs[j]
    adjacency = graph.adjacency[kept][:, kept] * edges[kept][:, kept]
    is_error = torch.tensor([k == "error" for k in kinds])
    is_token = torch.tensor([k == "embedding" for k in kinds])
    weights, depth = logit_weights(graph), n + 2
    scores = graph_scores(graph.adjacency, is_error, is_token, weights, depth)
    pruned_scores = graph_scores(adjacency, is_error[kept], is_token[kept], weights[kept], depth)
    logit_ids = graph.logit_tokens.tolist()
    labels = str_tokens(model, logit_ids)
    if graph.logit_minus is not None:
        labels = [f"{labels[0]} - {str_tokens(model, [graph.logit_minus])[0]}"]
    return AttributionGraphResult(
        node_kind=[kinds[i] for i in kept.tolist()], node_layer=layer, node_pos=pos, node_feature=feature,
        node_activation=activation, node_influence=influence[kept], node_input=graph.node_input[kept],
        node_bias=graph.node_bias[kept], adjacency=adjacency,
        logit_ids=logit_ids, logit_tokens=labels, logit_probs=graph.logit_probs.tolist(),
        str_tokens=str_tokens(model, graph.tokens.tolist()), token_ids=graph.tokens.tolist(), n_layers=n,
        full_nodes=expansion.full_nodes, full_features=expansion.full_features, full_edges=expansion.computed_edges,
        completeness_error=float(residual.abs().max()) if residual.numel() else 0.0,
        check_nodes=[new_index[i] for i in check_nodes], check_predicted=predicted.float(), check_direct=direct.float(),
        check_actual=actual.float(), check_correlation=_pearson(predicted, actual),
        check_actual_frozen=frozen.float(), check_correlation_frozen=_pearson(predicted, frozen),
        settings={"node_threshold": request.node_threshold, "edge_threshold": request.edge_threshold,
                  "logit_mass": request.logit_mass, "max_logits": request.max_logits, "check_top": request.check_top,
                  "max_nodes": request.max_nodes, "max_feature_nodes": request.max_feature_nodes,
                  "influence_share": request.influence_share,
                  **({"zero_bos": True} if request.zero_bos else {})},
        seconds={k: float(v) for k, v in seconds.items()},
        notice=expansion.notice, graph_features=n_feat, memory_bound_bytes=expansion.memory_bound_bytes,
        direction=None if graph.logit_minus is None else [logit_ids[0], graph.logit_minus],
        replacement_score=scores[0], completeness_score=scores[1],
        pruned_replacement_score=pruned_scores[0], pruned_completeness_score=pruned_scores[1],
    )
