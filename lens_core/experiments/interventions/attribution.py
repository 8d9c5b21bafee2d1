"""Attribution patching: the first-order (gradient) estimate of every activation-patching cell.

For a cell that copies activation ``a`` from the source run into the base run (see
:mod:`lens_core.experiments.interventions.patching`; ``denoise``: base = corrupted, source = clean),

    metric(patched) ~= metric(base) + (a_source - a_base) . d metric / d a   (at the base run)

summed over the cell's entries. One source forward pass, one base forward pass with gradients
and one backward pass (two: the logit difference and the answer's probability) give every
cell of a sweep, for every layer. The result has the type and axes of
:func:`lens_core.experiments.interventions.patching.activation_patching`, so the two sit side by side;
:func:`correlation` compares them. It is exact for a metric linear in ``a`` and drifts where
attention or the final softmax saturate (Nanda, "Attribution patching", 2023).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from lens_core.utils import get_act_name

from .._common import answer_metrics, layer_labels, str_tokens
from .patching import PatchingRequest, sweep_setup, PatchingResult, normalize, position_labels


@dataclasses.dataclass(frozen=True)
class AttributionPatchingRequest(PatchingRequest):
    """The patching request; ``memory_budget_mb`` and ``with_answer_prob`` are not used."""


@dataclasses.dataclass
class AttributionPatchingResult(PatchingResult):
    kind = "attribution_patching"


def _cells(delta_grad: torch.Tensor, activation: str, cell_kind: str) -> torch.Tensor:
    """Sum ``(a_source - a_base) * grad`` (no batch dim) over each cell's entries."""
    if cell_kind == "pos":
        return delta_grad.sum(-1)  # [pos, d_model] -> [pos]
    if activation == "pattern":
        return delta_grad.sum((-1, -2))  # [head, query, key] -> [head]
    if cell_kind == "head":
        return delta_grad.sum((0, 2))  # [pos, head, d_head] -> [head]
    return delta_grad.sum(-1).T  # head_pos: [pos, head, d_head] -> [head, pos]


def attribution_patching(model, request: AttributionPatchingRequest) -> AttributionPatchingResult:
    cfg = model.cfg
    activation, cell_kind, clean, corrupted, answer, wrong, base_tokens, source_tokens = sweep_setup(model, request)
    names = [get_act_name(activation, l) for l in range(cfg.n_layers)]

    with torch.no_grad():
        source_logits, source_cache = model.run_with_cache(source_tokens, names_filter=names)
    seen: dict[str, torch.Tensor] = {}

    def keep(x, hook):
        seen[hook.name] = x

    with torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            resid0 = model(base_tokens, stop_at_layer=0)
        x = resid0.clone().requires_grad_(True)
        with model.hooks(fwd_hooks=[(name, keep) for name in names]):
            base_logits = model(x, start_at_layer=0)
        diff, prob = answer_metrics(base_logits[0, -1], answer, wrong)
        acts = [seen[name] for name in names]
        grad_diff = torch.autograd.grad(diff, acts, retain_graph=True, allow_unused=True)
        grad_prob = torch.autograd.grad(prob, acts, allow_unused=True)
    est_diff, est_prob = [], []
    with torch.no_grad():
        for name, act, g_diff, g_prob in zip(names, acts, grad_diff, grad_prob):
            delta = (source_cache[name] - act.detach())[0].float()
            zero = torch.zeros_like(delta)
            est_diff.append(_cells(delta * (zero if g_diff is None else g_diff[0].float()), activation, cell_kind))
            est_prob.append(_cells(delta * (zero if g_prob is None else g_prob[0].float()), activation, cell_kind))
    base_diff, base_prob = float(diff.detach()), float(prob.detach())
    logit_diff = (base_diff + torch.stack(est_diff)).cpu()
    answer_prob = (base_prob + torch.stack(est_prob)).cpu()
    source_diff, source_prob = (float(v) for v in answer_metrics(source_logits[0, -1], answer, wrong))
    if request.direction == "denoise":
        clean_diff, clean_prob, corr_diff, corr_prob = source_diff, source_prob, base_diff, base_prob
    else:
        clean_diff, clean_prob, corr_diff, corr_prob = base_diff, base_prob, source_diff, source_prob

    n_heads = cfg.n_key_value_heads if activation in ("k", "v") else cfg.n_heads
    head_prefix = "KV" if activation in ("k", "v") and cfg.n_key_value_heads != cfg.n_heads else "H"
    clean_strs = str_tokens(model, clean[0].tolist())
    labels = {"layer": layer_labels(cfg.n_layers), "pos": position_labels(clean_strs),
              "head": [f"{head_prefix}{h}" for h in range(n_heads)]}
    axes = {"pos": ["layer", "pos"], "head": ["layer", "head"], "head_pos": ["layer", "head", "pos"]}[cell_kind]
    return AttributionPatchingResult(
        logit_diff=logit_diff, normalized=normalize(logit_diff, clean_diff, corr_diff), answer_prob=answer_prob,
        sweep=request.sweep, direction=request.direction, axes=axes, axis_labels=[labels[a] for a in axes],
        clean_logit_diff=clean_diff, corrupted_logit_diff=corr_diff, clean_answer_prob=clean_prob,
        corrupted_answer_prob=corr_prob, clean_str_tokens=clean_strs,
        corrupted_str_tokens=str_tokens(model, corrupted[0].tolist()),
    )


def correlation(exact: PatchingResult, approximate: PatchingResult, field: str = "logit_diff") -> float:
    """Pearson correlation over the cells of two results of the same sweep (NaN if either is constant)."""
    if exact.axes != approximate.axes or getattr(exact, field).shape != getattr(approximate, field).shape:
        raise ValueError("the two results must come from the same sweep")
    a, b = getattr(exact, field).flatten().double(), getattr(approximate, field).flatten().double()
    keep = a.isfinite() & b.isfinite()
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else float("nan")
