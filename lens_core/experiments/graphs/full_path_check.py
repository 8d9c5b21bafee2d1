"""Predicting feature interventions in the real model through every path, attention changes included.

The attribution graph predicts what zeroing a feature does with the attention patterns and norm scales
frozen; in the real model attention moves (the induction head finds its key through features that the
zeroing removes), which is why its real-model check falls on induction prompts. This module predicts
the same interventions with the real model's own gradient: the change of the metric (the first target's
demeaned logit, before any soft-cap) when feature ``f`` at ``(layer, pos)`` goes from its activation
``a`` to 0 is

    sum over steps s of  -a / n * d metric / d delta  at  delta = -a * (s + 1/2) / n

where ``delta * W_dec[f]`` is added to that layer's real MLP output (the same edit as
``graph_interventions.run_interventions``), everything else real: attention, norms and MLPs recomputed.
``steps=1`` is the gradient at the midpoint of the path; more steps approach the exact zeroing (the
integral of the gradient along the path *is* the change). All features and steps run as one batch and
one backward pass (each row's edit is its own leaf).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lens_core.features import CrossLayerTranscoder
from lens_core.features.clt_edits import clt_edit_hooks


def gradient_predictions(model, tset, tokens: torch.Tensor, features: Sequence[tuple[int, int, int, float]],
                         target: int, steps: int = 1, minus: Optional[int] = None) -> torch.Tensor:
    """Predicted change of ``target``'s demeaned last-position logit (``logit(target) - logit(minus)`` when
    ``minus`` is given) when each ``(layer, pos, feature, activation)`` is zeroed alone, through all paths of
    the real model (module docstring). Returns ``[len(features)]``."""
    m, n = len(features), max(1, int(steps))
    if m == 0:
        return torch.zeros(0)
    rows = m * n
    batch = tokens.expand(rows, -1)
    acts = torch.tensor([float(f[3]) for f in features], device=model.W_E.device)
    mid = (torch.arange(n, device=acts.device, dtype=torch.float32) + 0.5) / n  # [steps]
    offset = -(acts[:, None] * mid[None, :]).reshape(rows)  # the path point of each row
    delta = torch.zeros(rows, device=acts.device, requires_grad=True)
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _, _, _) in enumerate(features):
        by_layer.setdefault(int(layer), []).append(i)

    def edit(y, hook):
        layer = hook.layer()
        tc = tset[layer]
        add = torch.zeros_like(y, dtype=torch.float32)
        for i in by_layer[layer]:
            _, pos, feature, _ = features[i]
            r = slice(i * n, (i + 1) * n)
            add[r, int(pos)] = (offset[r] + delta[r])[:, None] * tc.W_dec[int(feature)].float()
        return y + add.to(y.dtype)

    if isinstance(tset, CrossLayerTranscoder):  # a feature writes every later layer
        hooks = clt_edit_hooks(tset, features, n, offset + delta)
    else:
        hooks = [(tset[layer].cfg.hook_out, edit) for layer in by_layer]
    final = {}
    if model.cfg.output_logits_soft_cap > 0:  # the graph's logits are the ones before the cap
        hooks.append(("unembed.hook_in", lambda x, hook: final.setdefault("x", x)))
    with torch.enable_grad():
        logits = model.run_with_hooks(batch, fwd_hooks=hooks)
        if final:
            last = final["x"][:, -1].float() @ model.W_U.float() + model.b_U.float()
        else:
            last = logits[:, -1].float()
        metric = last[:, int(target)] - (last[:, int(minus)] if minus is not None else last.mean(-1))
        (grad,) = torch.autograd.grad(metric.sum(), delta)
    return (grad.view(m, n).mean(1) * -acts).detach().cpu()


def graph_check_predictions(model, tset, tokens: torch.Tensor, graph, nodes: Sequence[int]) -> torch.Tensor:
    """``gradient_predictions(steps=1)`` for the attribution graph's checked feature ``nodes`` (indices into
    ``graph``'s features) and its first target (or direction): the column beside the graph's own prediction."""
    if not nodes:
        return torch.zeros(0)
    feats = [(int(graph.feature_layer[i]), int(graph.feature_pos[i]), int(graph.feature_index[i]),
              float(graph.activations[i])) for i in nodes]
    return gradient_predictions(model, tset, tokens, feats, int(graph.logit_tokens[0]), steps=1, minus=graph.logit_minus)
