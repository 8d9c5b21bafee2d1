"""Feature interventions with a cross-layer transcoder, in the real model (``graph_interventions`` and
``full_path_check`` call these for a ``CrossLayerTranscoder``).

A CLT feature of layer ``s`` writes ``act * W_dec[s][f, t - s]`` at ``hook_mlp_out`` of every layer ``t >= s``,
so clamping it to ``value`` adds ``(value - a) * W_dec[s][f, t - s]`` at every one of those outputs, ``a`` its
activation in that run (read at ``hook_in(s)``, before any of its writes): zeroing it removes its output from
every layer it writes. Everything else is the real model.
"""

from __future__ import annotations

from typing import Sequence

import torch

from lens_core.features import FeaturesUnavailable


def check_clt_clamp(clt, layer: int, feature: int) -> None:
    if not 0 <= layer < clt.n_layers:
        raise FeaturesUnavailable(f"layer {layer} is out of range: the cross-layer transcoder has layers 0..{clt.n_layers - 1}")
    if not 0 <= feature < clt.d_sae:
        raise FeaturesUnavailable(f"feature {feature!r} is out of range: layer {layer} has features 0..{clt.d_sae - 1}")


def _layer_of(name: str) -> int:
    return int(name.split(".")[1])


def clt_intervention_hooks(clt, sets: Sequence[Sequence[tuple]]) -> list:
    """``graph_interventions.run_interventions``'s hooks for a CLT: set ``row`` of the batch gets ``sets[row]``."""
    sources = sorted({c[0] for s in sets for c in s})
    inputs: dict[int, torch.Tensor] = {}

    def keep_input(x, hook):
        layer = _layer_of(hook.name)
        dtype = clt.W_enc[layer].dtype
        inputs[layer] = clt.encode_layer(x.to(dtype), layer)  # [m, pos, d_sae], this run's activations

    def edit_output(y, hook):
        t = _layer_of(hook.name)
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
        t = _layer_of(hook.name)
        add = torch.zeros_like(y, dtype=torch.float32)
        for i, (s, pos, feature, _) in enumerate(features):
            if int(s) <= t:
                r = slice(i * n, (i + 1) * n)
                add[r, int(pos)] = amount[r][:, None] * clt.W_dec[int(s)][int(feature), t - int(s)].float()
        return y + add.to(y.dtype)

    return [(clt.hook_out(t), edit) for t in range(low, clt.n_layers)]
