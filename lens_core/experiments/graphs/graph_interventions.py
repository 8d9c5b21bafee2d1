"""Feature interventions in the real model (attention not frozen), beside the graph's prediction.

A clamp ``(layer, pos, feature, value)`` sets that transcoder feature's activation to
``value`` (0 zeroes it) at that position: the real MLP output there changes by
``(value - a) * W_dec[feature]``, where ``a`` is the feature's activation *in that run*
(so a clamp downstream of another one is still a clamp). Everything else is the real model:
attention recomputed, the other MLPs real. Several intervention sets run as one batch.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from lens_core.features import CrossLayerTranscoder
from lens_core.features.clt_edits import clt_intervention_hooks
from lens_core.features.per_layer import check_layer_feature
from lens_core.results import ExperimentResult

from .._common import TokenLike, capped, resolve_token, resolve_tokens, str_tokens

Clamp = tuple[int, int, int, float]  # layer, pos, feature, value


def check_clamps(tset, n_pos: int, clamps: Sequence[Clamp]) -> list[Clamp]:
    checked = []
    for clamp in clamps:
        if len(clamp) != 4:
            raise ValueError(f"a clamp is (layer, position, feature, value), got {clamp!r}")
        layer, pos, feature, value = int(clamp[0]), int(clamp[1]), int(clamp[2]), float(clamp[3])
        check_layer_feature(tset, layer, feature)
        if not 0 <= pos < n_pos:
            raise ValueError(f"clamp position {pos} is outside the prompt's {n_pos} tokens")
        checked.append((layer, pos, feature, value))
    return checked


@torch.no_grad()
def run_interventions(model, tset, tokens: torch.Tensor, sets: Sequence[Sequence[Clamp]],
                      patterns: Optional[dict[str, torch.Tensor]] = None, uncapped: bool = False) -> torch.Tensor:
    """Last-position logits [m, d_vocab] of the real model under each set of clamps (a set may be empty).

    ``patterns`` (hook name -> the clean run's value [1, ...]: ``hook_pattern``, ``hook_scale``) freezes those
    activations (attention patterns, norm scales): the graph's own assumptions, to tell its error from theirs.
    ``uncapped``: the logits before final-logit soft-capping (what the graph's logit nodes are; the same
    without soft-capping)."""
    m = len(sets)
    batch = tokens.expand(m, -1)
    sets = [check_clamps(tset, tokens.shape[1], s) for s in sets]
    inputs: dict[int, torch.Tensor] = {}

    def keep_input(x, hook):
        inputs[hook.layer()] = x

    def edit_output(y, hook):
        layer = hook.layer()
        tc = tset[layer]
        acts = tc.encode(inputs[layer].to(tc.W_enc.dtype))  # [m, pos, d_sae], this run's activations
        y = y.clone()
        for row, items in enumerate(sets):
            for l, pos, feature, value in items:
                if l == layer:
                    y[row, pos] += ((value - acts[row, pos, feature]) * tc.W_dec[feature]).to(y.dtype)
        return y

    hooks = [(name, lambda x, hook: patterns[hook.name].expand_as(x)) for name in (patterns or {})]
    if isinstance(tset, CrossLayerTranscoder):  # a feature writes every later layer (features.clt_edits)
        hooks += clt_intervention_hooks(tset, sets)
    else:
        for layer in sorted({c[0] for s in sets for c in s}):
            hooks += [(tset[layer].cfg.hook_in, keep_input), (tset[layer].cfg.hook_out, edit_output)]
    final = {}
    if uncapped and model.cfg.output_logits_soft_cap > 0:
        hooks.append(("unembed.hook_in", lambda x, hook: final.setdefault("x", x)))
    logits = model.run_with_hooks(batch, fwd_hooks=hooks)
    if final:
        return (final["x"][:, -1].float() @ model.W_U.float() + model.b_U.float())
    return logits[:, -1].float()


def demeaned(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(-1, keepdim=True)


@dataclasses.dataclass(frozen=True)
class GraphInterventionRequest:
    """Clamp features of the bundled transcoders and read the new predictions; the graph built with the
    same targets and limits predicts the change of each target logit (frozen attention)."""

    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    clamps: tuple[Clamp, ...] = ()
    targets: tuple[TokenLike, ...] = ()
    logit_mass: float = 0.95
    max_logits: int = 10
    top_k: int = 10
    max_nodes: int = 8192
    transcoders: str = "bundled"  # which transcoders (the fingerprint, from the page, keys the cache)
    zero_bos: bool = False  # the graph with circuit-tracer's BOS convention (AttributionGraphRequest.zero_bos)


@dataclasses.dataclass
class GraphInterventionResult(ExperimentResult):
    kind = "graph_intervention"
    before_ids: torch.Tensor  # [k] top predictions without the clamps
    before_probs: torch.Tensor
    after_ids: torch.Tensor  # [k] with the clamps
    after_probs: torch.Tensor
    target_ids: torch.Tensor  # [n_targets]
    actual_change: torch.Tensor  # [n_targets] demeaned logit change in the real model
    predicted_change: torch.Tensor  # [n_targets] the graph's prediction (frozen attention, linear)
    before_tokens: list
    after_tokens: list
    target_tokens: list
    clamps: list
    str_tokens: list


def graph_intervention(model, request: GraphInterventionRequest, transcoders=None) -> GraphInterventionResult:
    """``transcoders``: a TranscoderSet to use instead of ``load_transcoders(model)``. The graph's prediction comes
    from the full graph when it fits ``max_nodes``, else from the same frozen replacement model run forward (from
    the walk's clean pass). ``request.zero_bos``: the prediction of the graph with circuit-tracer's BOS convention
    (no feature nodes at position 0, so a clamp there is refused; past position 0 the numbers are the same, by
    causality)."""
    from lens_core.features import load_transcoders

    from ._graph_prune import predicted_effects
    from ._linear_response import linear_response, no_node_error
    from ._replacement import fill_dense, prepare_walk

    tokens = resolve_tokens(model, request.prompt, request.tokens)
    tset = transcoders if transcoders is not None else load_transcoders(model)
    clamps = check_clamps(tset, tokens.shape[1], request.clamps)
    if not clamps:
        raise ValueError("choose at least one feature to clamp")
    targets = [resolve_token(model, t, "target") for t in request.targets]
    zero_bos = bool(request.zero_bos)
    walk = prepare_walk(model, tset, tokens, targets or None, request.logit_mass, request.max_logits, zero_bos=zero_bos)
    graph = walk.partial  # the nodes (no rows yet)
    index = {(int(l), int(p), int(f)): i for i, (l, p, f) in
             enumerate(zip(graph.feature_layer.tolist(), graph.feature_pos.tolist(), graph.feature_index.tolist()))}
    nodes = []
    for layer, pos, feature, value in clamps:
        if (layer, pos, feature) not in index:
            raise no_node_error(layer, pos, feature, zero_bos)
        nodes.append((index[(layer, pos, feature)], value))
    if graph.n_nodes <= request.max_nodes:  # the full graph's own prediction
        graph = fill_dense(walk)
        predicted = predicted_effects(graph, [nodes])[graph.logit_node(0):, 0]
    else:  # the same numbers run forward, at any length (graphs/_linear_response.py), from the walk's clean pass
        predicted = linear_response(model, tset, tokens, [clamps], zero_bos=zero_bos, cache=walk.cache)
        predicted = predicted[0, graph.logit_tokens.to(tokens.device)]
    raw = run_interventions(model, tset, tokens, [[], clamps], uncapped=True)  # the graph's (pre-cap) logits
    actual = demeaned(raw[1]) - demeaned(raw[0])
    logits = capped(model, raw)  # the model's real logits
    ids = graph.logit_tokens
    k = max(1, min(int(request.top_k), logits.shape[-1]))
    before = logits[0].softmax(-1).topk(k)
    after = logits[1].softmax(-1).topk(k)
    return GraphInterventionResult(
        before_ids=before.indices.cpu(), before_probs=before.values.cpu(), after_ids=after.indices.cpu(),
        after_probs=after.values.cpu(), target_ids=ids, actual_change=actual[ids.to(actual.device)].cpu(),
        predicted_change=predicted.cpu(), before_tokens=str_tokens(model, before.indices.tolist()),
        after_tokens=str_tokens(model, after.indices.tolist()), target_tokens=str_tokens(model, ids.tolist()),
        clamps=[list(c) for c in clamps], str_tokens=str_tokens(model, tokens[0].tolist()),
    )
