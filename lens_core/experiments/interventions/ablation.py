"""Ablation: replace components' outputs and measure the metric and the loss per token.

Components: ``("head", layer, head)`` (the head's ``hook_z``, so its share of the
output goes; the layer's ``b_O`` stays), ``("attn", layer)`` (``hook_attn_out``),
``("mlp", layer)`` (``hook_mlp_out``), ``("layer", layer)`` (both of the block's
outputs: the block then passes its input through unchanged when zero-ablated).

Methods:
- ``zero``: the activation becomes 0.
- ``mean``: its mean over reference prompts (the prompt itself when none are
  given); ``mean_over="positions"`` averages over prompts and positions (any
  lengths), ``"prompts"`` keeps one mean per position (references must have the
  prompt's length).
- ``resample``: the activation from one reference prompt (same length), chosen
  with ``seed``.

``ablation`` ablates the listed components together; ``ablation_sweep``
ablates each head (or each attention layer / MLP) on its own, batched like
activation patching, and reports the change in the metric and in mean loss.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from lens_core.results import ExperimentResult

from .._common import (
    TokenLike,
    answer_metrics,
    check_head,
    check_layer,
    final_norm,
    layer_labels,
    loss_per_token,
    resolve_answers,
    resolve_tokens,
    str_tokens,
    unembed,
)
from .patching import LayerCells, Progress, run_cells

METHODS = ("zero", "mean", "resample")
MEAN_OVER = ("positions", "prompts")
SWEEP_TARGETS = ("heads", "attn", "mlp")


@dataclasses.dataclass(frozen=True)
class AblationRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    components: tuple[tuple, ...] = ()
    method: str = "zero"
    reference_prompts: tuple[str, ...] = ()
    reference_tokens: tuple[tuple[int, ...], ...] = ()
    mean_over: str = "positions"
    seed: int = 0
    answer: Optional[TokenLike] = None  # metric at the last position: logit (difference), when given
    wrong_answer: Optional[TokenLike] = None


@dataclasses.dataclass
class AblationResult(ExperimentResult):
    kind = "ablation"
    loss_per_token: torch.Tensor  # [pos - 1], unablated
    ablated_loss_per_token: torch.Tensor  # [pos - 1]
    component_labels: list
    method: str
    metric: Optional[float]  # logit (difference) at the last position, None without an answer
    ablated_metric: Optional[float]
    answer_prob: Optional[float]
    ablated_answer_prob: Optional[float]
    str_tokens: list


@dataclasses.dataclass(frozen=True)
class AblationSweepRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    target: str = "heads"  # "heads" | "attn" | "mlp"
    method: str = "zero"
    reference_prompts: tuple[str, ...] = ()
    reference_tokens: tuple[tuple[int, ...], ...] = ()
    mean_over: str = "positions"
    seed: int = 0
    answer: Optional[TokenLike] = None
    wrong_answer: Optional[TokenLike] = None
    memory_budget_mb: float = 256.0


@dataclasses.dataclass
class AblationSweepResult(ExperimentResult):
    kind = "ablation_sweep"
    loss: torch.Tensor  # mean loss with each component ablated: [layer, head] or [layer]
    loss_change: torch.Tensor  # minus the unablated mean loss
    metric: torch.Tensor  # logit (difference) at the last position (NaN without an answer)
    metric_change: torch.Tensor
    axes: list
    axis_labels: list
    target: str
    method: str
    base_loss: float
    base_metric: Optional[float]
    str_tokens: list


# ---- ablation values ------------------------------------------------------------------
def _component_hook(model, component: Sequence) -> list[tuple[str, Optional[int]]]:
    """Hook names (and head index) a component lives on."""
    if not component:
        raise ValueError("empty component")
    kind = component[0]
    if kind == "head":
        if len(component) != 3:
            raise ValueError(f"a head component is ('head', layer, head), got {tuple(component)}")
        layer, head = check_head(model, component[1], component[2])
        return [(f"blocks.{layer}.attn.hook_z", head)]
    if kind in ("attn", "mlp", "layer"):
        if len(component) != 2:
            raise ValueError(f"a {kind} component is ({kind!r}, layer), got {tuple(component)}")
        layer = check_layer(model, component[1])
        names = {"attn": ["attn_out"], "mlp": ["mlp_out"], "layer": ["attn_out", "mlp_out"]}[kind]
        return [(f"blocks.{layer}.hook_{name}", None) for name in names]
    raise ValueError(f"unknown component kind {kind!r}: use 'head', 'attn', 'mlp' or 'layer'")


def _label(component: Sequence) -> str:
    return f"L{component[1]}H{component[2]}" if component[0] == "head" else f"L{component[1]} {component[0]}"


def _references(model, request) -> list[torch.Tensor]:
    refs = [resolve_tokens(model, None, toks, "reference prompt") for toks in request.reference_tokens]
    refs += [resolve_tokens(model, text, None, "reference prompt") for text in request.reference_prompts]
    return refs


def ablation_values(model, tokens: torch.Tensor, names: list[str], request) -> dict[str, torch.Tensor]:
    """The replacement activation ``[pos, ...]`` for each hook name, for the prompt ``tokens [1, pos]``."""
    if request.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {request.method!r}")
    if request.mean_over not in MEAN_OVER:
        raise ValueError(f"mean_over must be one of {MEAN_OVER}, got {request.mean_over!r}")
    n_pos = tokens.shape[1]
    refs = _references(model, request)
    same_length = request.method == "resample" or (request.method == "mean" and request.mean_over == "prompts")
    if same_length:
        if not refs:
            raise ValueError(f"{request.method} ablation needs reference prompts")
        for ref in refs:
            if ref.shape[1] != n_pos:
                raise ValueError(
                    f"reference prompts must have the prompt's {n_pos} tokens for {request.method} ablation"
                    f"{' per position' if request.method == 'mean' else ''}; one has {ref.shape[1]}"
                )
    if request.method == "zero":
        _, cache = model.run_with_cache(tokens, names_filter=names)
        return {name: torch.zeros_like(cache[name][0]) for name in names}
    if request.method == "resample":
        pick = int(torch.randint(len(refs), (1,), generator=torch.Generator().manual_seed(request.seed)))
        _, cache = model.run_with_cache(refs[pick], names_filter=names)
        return {name: cache[name][0] for name in names}
    refs = refs or [tokens]
    caches = [model.run_with_cache(ref, names_filter=names)[1] for ref in refs]
    values = {}
    for name in names:
        acts = [c[name][0] for c in caches]  # each [pos_i, ...]
        if request.mean_over == "prompts":
            values[name] = torch.stack(acts).mean(0)
        else:
            mean = torch.cat(acts).mean(0)  # over every position of every prompt
            values[name] = mean.expand(n_pos, *mean.shape)
    return values


def _metric(model, logits: torch.Tensor, answer: Optional[int], wrong: Optional[int]):
    if answer is None:
        return None, None
    diff, prob = answer_metrics(logits, answer, wrong)
    return diff, prob


def _answers(model, request) -> tuple[Optional[int], Optional[int]]:
    if request.answer is None:
        if request.wrong_answer is not None:
            raise ValueError("a wrong answer needs an answer")
        return None, None
    answer, wrong = resolve_answers(model, request)
    return answer, wrong


@torch.inference_mode()
def ablation(model, request: AblationRequest) -> AblationResult:
    tokens = resolve_tokens(model, request.prompt, request.tokens)
    answer, wrong = _answers(model, request)
    if not request.components:
        raise ValueError("choose at least one component to ablate")
    targets = [t for c in request.components for t in _component_hook(model, c)]
    values = ablation_values(model, tokens, sorted({name for name, _ in targets}), request)

    hooks = []
    for name, head in targets:
        def replace(act: torch.Tensor, hook, value=values[name], head=head) -> torch.Tensor:
            act = act.clone()
            if head is None:
                act[:] = value
            else:
                act[:, :, head] = value[:, head]
            return act

        hooks.append((name, replace))
    logits = model(tokens)
    ablated = model.run_with_hooks(tokens, fwd_hooks=hooks)
    metric, prob = _metric(model, logits[0, -1], answer, wrong)
    ablated_metric, ablated_prob = _metric(model, ablated[0, -1], answer, wrong)
    as_float = lambda x: None if x is None else float(x)  # noqa: E731
    return AblationResult(
        loss_per_token=loss_per_token(logits, tokens)[0].cpu(),
        ablated_loss_per_token=loss_per_token(ablated, tokens)[0].cpu(),
        component_labels=[_label(c) for c in request.components],
        method=request.method,
        metric=as_float(metric),
        ablated_metric=as_float(ablated_metric),
        answer_prob=as_float(prob),
        ablated_answer_prob=as_float(ablated_prob),
        str_tokens=str_tokens(model, tokens[0].tolist()),
    )


@torch.inference_mode()
def ablation_sweep(model, request: AblationSweepRequest, progress: Progress = None) -> AblationSweepResult:
    cfg = model.cfg
    if request.target not in SWEEP_TARGETS:
        raise ValueError(f"target must be one of {SWEEP_TARGETS}, got {request.target!r}")
    tokens = resolve_tokens(model, request.prompt, request.tokens)
    answer, wrong = _answers(model, request)
    n = cfg.n_layers
    act = {"heads": "attn.hook_z", "attn": "hook_attn_out", "mlp": "hook_mlp_out"}[request.target]
    names = [f"blocks.{l}.{act}" for l in range(n)]
    values = ablation_values(model, tokens, names, request)
    resid_names = [f"blocks.{l}.hook_resid_pre" for l in range(n)]
    logits, cache = model.run_with_cache(tokens, names_filter=resid_names)

    if request.target == "heads":
        cells, shape = [(slice(None), h) for h in range(cfg.n_heads)], (n, cfg.n_heads)
    else:
        cells, shape = [(slice(None),)], (n,)
    groups = [LayerCells(l, names[l], values[names[l]], cells) for l in range(n)]

    def readout(resid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = unembed(model, final_norm(model, resid))  # [batch, pos, d_vocab]
        loss = loss_per_token(out, tokens.expand(out.shape[0], -1)).mean(-1)
        metric = _metric(model, out[:, -1], answer, wrong)[0]
        return loss, metric if metric is not None else torch.full_like(loss, float("nan"))

    base_resid = [cache[name][0] for name in resid_names]
    results = run_cells(model, base_resid, groups, readout, request.memory_budget_mb, progress, last_position_only=False)
    loss = torch.stack([r[0] for r in results]).reshape(shape).float().cpu()
    metric = torch.stack([r[1] for r in results]).reshape(shape).float().cpu()
    base_loss = float(loss_per_token(logits, tokens).mean())
    base_metric = _metric(model, logits[0, -1], answer, wrong)[0]
    base_metric = None if base_metric is None else float(base_metric)
    axes = ["layer", "head"] if request.target == "heads" else ["layer"]
    labels = [layer_labels(n), [f"H{h}" for h in range(cfg.n_heads)]] if request.target == "heads" else [layer_labels(n)]
    return AblationSweepResult(
        loss=loss,
        loss_change=loss - base_loss,
        metric=metric,
        metric_change=metric - (base_metric if base_metric is not None else float("nan")),
        axes=axes,
        axis_labels=labels,
        target=request.target,
        method=request.method,
        base_loss=base_loss,
        base_metric=base_metric,
        str_tokens=str_tokens(model, tokens[0].tolist()),
    )
