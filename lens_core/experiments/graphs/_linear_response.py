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

from lens_core.features import CrossLayerTranscoder


def _layer(name: str) -> int:
    return int(name.split(".")[1])


class _Dictionary:
    """Per-layer access to a TranscoderSet or a CrossLayerTranscoder: hooks, encoder, decoder rows into a layer."""

    def __init__(self, tset, n_layers: int) -> None:
        self.tset, self.clt = tset, isinstance(tset, CrossLayerTranscoder)
        self.layers = list(range(tset.n_layers)) if self.clt else [l for l in tset.layers if 0 <= l < n_layers]

    def hook_in(self, l: int) -> str:
        return self.tset.hook_in(l) if self.clt else str(self.tset[l].cfg.hook_in)

    def hook_out(self, l: int) -> str:
        return self.tset.hook_out(l) if self.clt else str(self.tset[l].cfg.hook_out)

    def encode(self, x: torch.Tensor, l: int) -> torch.Tensor:
        if self.clt:
            return self.tset.encode_layer(x.to(self.tset.W_enc[l].dtype), l).float()
        tc = self.tset[l]
        return tc.encode(x.to(tc.W_enc.dtype)).float()

    def W_enc(self, l: int) -> torch.Tensor:
        return (self.tset.W_enc[l] if self.clt else self.tset[l].W_enc).float()

    def W_dec(self, s: int, t: int) -> torch.Tensor:
        """Layer ``s`` features' decoder rows into layer ``t``'s output [d_sae, d_out]."""
        return (self.tset.W_dec[s][:, t - s] if self.clt else self.tset[s].W_dec).float()

    def skip(self, dx: torch.Tensor, l: int):
        """The skip term's change for an input change ``dx`` (None without one)."""
        if self.clt:
            W = getattr(self.tset, "W_skip", None)
            return None if W is None else dx @ W[l].float()
        W = getattr(self.tset[l], "W_skip", None)
        return None if W is None else dx @ W.float()


@torch.no_grad()
def linear_response(model, tset, tokens: torch.Tensor, sets: Sequence[Sequence[tuple]]) -> torch.Tensor:
    """The frozen replacement model's change of the last position's logits (before any final soft-cap, demeaned)
    [m, d_vocab] under each clamp set ``(layer, pos, feature, value)``; every clamped feature must be active in
    the clean run (the graph has no node for an inactive one). Equal to ``predicted_effects`` on the full graph."""
    d = _Dictionary(tset, model.cfg.n_layers)
    frozen_names = [n for n in model.hook_dict if n.endswith("hook_pattern") or n.endswith("hook_scale")]
    reads = {d.hook_in(l) for l in d.layers} | {d.hook_out(l) for l in d.layers} | set(frozen_names)
    _, cache = model.run_with_cache(tokens, names_filter=sorted(reads & set(model.hook_dict)))
    x_clean = {l: cache[d.hook_in(l)][0].float() for l in d.layers}
    act_clean = {l: d.encode(x_clean[l], l) for l in d.layers}  # [pos, d_sae]
    active = {l: act_clean[l] != 0 for l in d.layers}
    m = len(sets) + 1  # row 0: no clamps (the reference, through the same frozen pass)
    clamps = {l: [] for l in d.layers}
    for row, items in enumerate(sets, start=1):
        for layer, pos, feature, value in items:
            if not bool(active[layer][pos, feature]):
                raise ValueError(f"feature {feature} of layer {layer} is not active at position {pos}: the graph has no "
                                 "node for it (clamping an inactive feature is an addition the graph cannot predict)")
            clamps[layer].append((row, pos, feature, float(value) - float(act_clean[layer][pos, feature])))
    deltas: dict[int, torch.Tensor] = {}  # layer -> delta_act [m, pos, d_sae]
    x_new: dict[int, torch.Tensor] = {}

    def keep_input(x, hook):
        x_new[_layer(hook.name)] = x.float()

    def replace_output(y, hook):
        t = _layer(hook.name)
        dx = x_new[t] - x_clean[t]
        delta = (dx @ d.W_enc(t)) * active[t]
        for row, pos, feature, change in clamps[t]:
            delta[row, pos, feature] = change
        deltas[t] = delta
        out = cache[hook.name].float().expand(m, -1, -1).clone()
        sources = [s for s in d.layers if s <= t] if d.clt else [t]
        for s in sources:
            out += deltas[s] @ d.W_dec(s, t)
        skip = d.skip(dx, t)
        if skip is not None:
            out += skip
        return out.to(y.dtype)

    hooks = [(name, lambda x, hook: cache[hook.name].expand_as(x)) for name in frozen_names]
    for l in d.layers:
        hooks += [(d.hook_in(l), keep_input), (d.hook_out(l), replace_output)]
    final = {}
    hooks.append(("unembed.hook_in", lambda x, hook: final.setdefault("x", x)))
    model.run_with_hooks(tokens.expand(m, -1), fwd_hooks=hooks)
    logits = final["x"][:, -1].float() @ model.W_U.float() + model.b_U.float()
    logits = logits - logits.mean(-1, keepdim=True)
    return logits[1:] - logits[:1]
