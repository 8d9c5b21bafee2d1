"""The attribution graph's prediction of a clamp, computed forward in one batched pass, without the graph.

The graph's prediction (``_graph_prune.predicted_effects``) is the answer of the frozen replacement model:
attention patterns and norm scales fixed at the clean run, each MLP replaced by its transcoder plus the clean
error, and every *active* feature responding linearly (its activation moves with its pre-activation; an
inactive feature stays off; a clamped feature is set). All of that is linear, so instead of building the
graph's rows (one backward row per feature: the whole graph, refused past the dense node limit) the same
numbers come from running it forward: the real model with patterns and scales frozen, and at each MLP output
``clean output + delta_act @ W_dec`` (+ the skip term's change, a linear path), with
``delta_act = active * (delta of the transcoder's input) @ W_enc`` and the clamps set. One pass for every
intervention set, at any prompt length. A cross-layer transcoder's feature of layer ``s`` writes its change
into every layer ``t >= s`` (``W_dec[s][:, t - s]``).

The test (tests/experiments/test_graph_linear_response.py) checks it against ``predicted_effects`` on the
full graph for per-layer, skip and cross-layer transcoders.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ._dictionary_views import dictionary_views


FROZEN = ("hook_pattern", "hook_scale")


def no_node_error(layer: int, pos: int, feature: int, zero_bos: bool) -> ValueError:
    """The words for a clamp on a feature the graph has no node for."""
    if zero_bos and pos == 0:
        return ValueError(f"feature {feature} of layer {layer} is at position 0, which a graph that zeroes the BOS "
                          "position (zero_bos, circuit-tracer's convention) has no feature nodes for: clamp a feature "
                          "at a later position, or use the graph without zero_bos")
    return ValueError(f"feature {feature} of layer {layer} is not active at position {pos}: the graph has no "
                      "node for it (clamping an inactive feature is an addition the graph cannot predict)")


@torch.no_grad()
def linear_response(model, tset, tokens: torch.Tensor, sets: Sequence[Sequence[tuple]], zero_bos: bool = False,
                    cache=None) -> torch.Tensor:
    """The frozen replacement model's change of the last position's logits (before any final soft-cap, demeaned)
    [m, d_vocab] under each clamp set ``(layer, pos, feature, value)``; every clamped feature must be active in
    the clean run (the graph has no node for an inactive one). Equal to ``predicted_effects`` on the full graph.

    ``zero_bos``: the graph with circuit-tracer's BOS convention (``prepare_walk``): position 0's features are no
    nodes (a clamp there is refused) and what its MLPs write is the clean run's, a constant. ``cache``: the clean
    run's cache when the caller has one (``Walk.cache``, the walk's forward pass): its ``hook_pattern`` and
    ``hook_scale`` values are the ones frozen, and no clean pass is run here."""
    views = dictionary_views(model, tset)  # per layer: encoder, decoders into layers s .. s + R - 1, skip
    layers = range(len(views))
    hook_out = [f"blocks.{l}.hook_mlp_out" for l in layers]
    if cache is None:
        frozen_names = [n for n in model.hook_dict if n.endswith(FROZEN)]
        reads = {v.hook_in for v in views} | set(hook_out) | set(frozen_names)
        _, cache = model.run_with_cache(tokens, names_filter=sorted(reads))
    else:  # the walk's pass froze these (every attention pattern and norm scale the frozen model has)
        frozen_names = [n for n in cache.keys() if n.endswith(FROZEN)]
        missing = sorted(({v.hook_in for v in views} | set(hook_out)) - set(cache.keys()))
        if missing:
            raise ValueError(f"the clean run's cache lacks {missing}")
    x_clean = [cache[v.hook_in][0].float() for v in views]
    act_clean = [v.encode(x) for v, x in zip(views, x_clean)]  # [pos, d_sae]
    active = [a != 0 for a in act_clean]
    if zero_bos:
        for a in active:
            a[0] = False
    m = len(sets) + 1  # row 0: no clamps (the reference, through the same frozen pass)
    clamps = {l: [] for l in layers}
    for row, items in enumerate(sets, start=1):
        for layer, pos, feature, value in items:
            if not bool(active[layer][pos, feature]):
                raise no_node_error(layer, pos, feature, zero_bos)
            clamps[layer].append((row, pos, feature, float(value) - float(act_clean[layer][pos, feature])))
    deltas: dict[int, torch.Tensor] = {}  # layer -> delta_act [m, pos, d_sae]
    x_new: dict[int, torch.Tensor] = {}

    def keep_input(x, hook):
        x_new[hook.layer()] = x.float()

    def replace_output(y, hook):
        t = hook.layer()
        dx = x_new[t] - x_clean[t]
        if zero_bos:  # position 0's MLP output stays the clean one (no features, no skip change)
            dx[:, 0] = 0.0
        delta = (dx @ views[t].W_enc) * active[t]
        for row, pos, feature, change in clamps[t]:
            delta[row, pos, feature] = change
        deltas[t] = delta
        out = cache[hook.name].float().expand(m, -1, -1).clone()
        for s, v in enumerate(views[: t + 1]):  # every layer whose decoders reach t (R = 1 for per-layer ones)
            if t - s < v.W_dec.shape[1]:
                out += deltas[s] @ v.W_dec[:, t - s]
        if views[t].W_skip is not None:
            out += dx @ views[t].W_skip
        return out.to(y.dtype)

    hooks = [(name, lambda x, hook: cache[hook.name].expand_as(x)) for name in frozen_names]
    for v, out_name in zip(views, hook_out):
        hooks += [(v.hook_in, keep_input), (out_name, replace_output)]
    final = {}
    hooks.append(("unembed.hook_in", lambda x, hook: final.setdefault("x", x)))
    model.run_with_hooks(tokens.expand(m, -1), fwd_hooks=hooks)
    logits = final["x"][:, -1].float() @ model.W_U.float() + model.b_U.float()
    logits = logits - logits.mean(-1, keepdim=True)
    return logits[1:] - logits[:1]
