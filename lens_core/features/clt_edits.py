"""Feature edits with a cross-layer transcoder (CLT), in the real model: clamps for the graph's interventions,
the differentiable edit of ``full_path_check``, and steering (``splice.steer`` calls :func:`clt_steer` for a CLT).

A CLT feature of layer ``s`` writes ``act * W_dec[s][f, t - s]`` at ``hook_mlp_out`` of every layer ``t >= s``,
so clamping it to ``value`` adds ``(value - a) * W_dec[s][f, t - s]`` at every one of those outputs, ``a`` its
activation in that run (read at ``hook_in(s)``, before any of its writes): zeroing it removes its output from
every layer it writes. Everything else is the real model. Every list of hooks keeps its own state (one call).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import torch

from .transcoder import FeaturesUnavailable

Edits = Mapping[int, Mapping[int, float]]  # layer -> feature -> clamped value
Positions = Optional[Union[int, Sequence[int], slice]]


def check_clt_clamp(clt, layer: int, feature: int) -> None:
    if not 0 <= layer < clt.n_layers:
        raise FeaturesUnavailable(f"layer {layer} is out of range: the cross-layer transcoder has layers 0..{clt.n_layers - 1}")
    if not 0 <= feature < clt.d_sae:
        raise FeaturesUnavailable(f"feature {feature!r} is out of range: layer {layer} has features 0..{clt.d_sae - 1}")


def clt_intervention_hooks(clt, sets: Sequence[Sequence[tuple]]) -> list:
    """Clamps ``(layer, pos, feature, value)``: row ``row`` of the batch gets ``sets[row]`` (a set may be empty)."""
    sources = sorted({c[0] for s in sets for c in s})
    inputs: dict[int, torch.Tensor] = {}

    def keep_input(x, hook):
        layer = hook.layer()
        dtype = clt.W_enc[layer].dtype
        inputs[layer] = clt.encode_layer(x.to(dtype), layer)  # [m, pos, d_sae], this run's activations

    def edit_output(y, hook):
        t = hook.layer()
        y = y.clone()
        for row, items in enumerate(sets):
            for s, pos, feature, value in items:
                if s <= t:
                    change = (value - inputs[s][row, pos, feature]) * clt.W_dec[s][feature, t - s]
                    y[row, pos] += change.to(y.dtype)
        return y

    hooks = [(clt.hook_in(s), keep_input) for s in sources]
    if sources:
        hooks += [(clt.hook_out(t), edit_output) for t in range(sources[0], clt.n_layers)]
    return hooks


def clt_edit_hooks(clt, features: Sequence[tuple], rows_per_feature: int, amount: torch.Tensor) -> list:
    """Hooks adding ``amount[row] * W_dec[s][f, t - s]`` at every ``hook_out(t >= s)`` for each feature's rows
    (``full_path_check``'s differentiable edit; feature ``i`` owns rows ``i * rows_per_feature ...``)."""
    n = rows_per_feature
    if not features:
        return []
    low = min(int(f[0]) for f in features)

    def edit(y, hook):
        t = hook.layer()
        add = torch.zeros_like(y, dtype=torch.float32)
        for i, (s, pos, feature, _) in enumerate(features):
            if int(s) <= t:
                r = slice(i * n, (i + 1) * n)
                add[r, int(pos)] = amount[r][:, None] * clt.W_dec[int(s)][int(feature), t - int(s)].float()
        return y + add.to(y.dtype)

    return [(clt.hook_out(t), edit) for t in range(low, clt.n_layers)]


# ---- steering -------------------------------------------------------------------------------------------------
def _positions(positions: Positions, n_pos: int) -> list[int]:
    """Explicit, distinct, non-negative positions (None: all of them)."""
    every = range(n_pos)
    if positions is None:
        chosen = list(every)
    elif isinstance(positions, slice):
        chosen = list(every[positions])
    elif isinstance(positions, int):
        chosen = [positions]
    else:
        chosen = [int(p) for p in positions]
    for p in chosen:
        if not -n_pos <= p < n_pos:
            raise FeaturesUnavailable(f"position {p} is outside the prompt (0..{n_pos - 1})")
    return sorted({p % n_pos for p in chosen})


def _replacement_hooks(clt, edits: Edits, positions: list[int]) -> list:
    """Every output the edited features write (layers ``min(edits) .. n_layers - 1``) replaced by the CLT's
    reconstruction from this run's features of every layer up to it, the edits applied (the skip term included)."""
    acts: dict[int, torch.Tensor] = {}
    inputs: dict[int, torch.Tensor] = {}

    def read(x, hook):
        s = hook.layer()
        x = x.to(clt.W_enc[s].dtype)
        a = clt.encode_layer(x, s)
        if s in edits:
            a = a.clone()
            for feature, value in edits[s].items():
                a[:, positions, feature] = float(value)
        acts[s], inputs[s] = a, x

    def replace(y, hook):
        t = hook.layer()
        out = clt.decode_layer({s: acts[s] for s in range(t + 1)}, t, inputs[t])
        return out.to(y.dtype)

    low = min(edits)
    return [(clt.hook_in(s), read) for s in range(clt.n_layers)] + \
           [(clt.hook_out(t), replace) for t in range(low, clt.n_layers)]


def clt_steer_hooks(clt, edits: Edits, n_pos: int, batch: int = 1, positions: Positions = None,
                    error_term: bool = True) -> list:
    """Hooks setting features ``{layer: {feature: value}}`` at ``positions`` (None: every one) of a batch of
    ``batch`` prompts of ``n_pos`` tokens. ``error_term=True``: only the edits change the model (each adds
    ``(value - a) * W_dec`` into every layer it writes). ``False``: the MLP outputs of every layer the edits write
    are the CLT's reconstruction (the edits included)."""
    for layer, per_feature in edits.items():
        for feature in per_feature:
            check_clt_clamp(clt, int(layer), int(feature))
    where = _positions(positions, n_pos)
    edits = {int(l): {int(f): float(v) for f, v in per.items()} for l, per in edits.items() if per}
    if not edits:
        return []
    if not error_term:
        return _replacement_hooks(clt, edits, where)
    items = [(s, p, f, v) for s, per in sorted(edits.items()) for f, v in per.items() for p in where]
    return clt_intervention_hooks(clt, [items] * batch)


@torch.no_grad()
def clt_steer(model: Any, clt, tokens: torch.Tensor, edits: Edits, positions: Positions = None,
              error_term: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(original logits, logits with ``edits`` applied), each [batch, pos, d_vocab] (``splice.steer`` for a CLT)."""
    if not edits:
        raise FeaturesUnavailable("choose at least one feature to steer")
    hooks = clt_steer_hooks(clt, edits, tokens.shape[1], tokens.shape[0], positions, error_term)
    original = model(tokens)
    with model.hooks(fwd_hooks=hooks):
        steered = model(tokens)
    return original, steered
