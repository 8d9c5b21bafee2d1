"""Direct logit attribution: how much each component writes along the answer's logit direction.

The metric is the logit of ``answer`` at ``position`` (minus the logit of
``wrong_answer`` when given). The final norm's scale is frozen at the value
the model actually used there, which makes the map from the final residual to
the logits linear: ``logit = sum_c (norm_linear(c) . direction) + bias`` where
``norm_linear`` centres (LayerNorm), divides by the frozen scale and multiplies
by the final norm's weight when it is not folded. The biases are the final
norm's bias (unfolded LayerNorm) dotted with the direction plus the
unembedding bias, reported separately, so ``decomposed.sum() + bias_total``
equals the model's actual metric.

Soft-capped logits (Gemma 2): the cap ``c * tanh(logit / c)`` is not linear, so the decomposition is of the
logits before the cap: ``decomposed.sum() + bias_total == uncapped_logit_diff``, while ``logit_diff`` is the
model's (capped) metric; ``soft_capped`` says which case a result is. Post-sublayer norms (Gemma, OLMo 2):
``hook_attn_out``/``hook_mlp_out`` are after them, and heads and neurons are carried through the layer's
post-norm with its scale frozen (linear), so they still sum to their layer's part (plus ``b_O``'s).

Views:
- ``accumulated``: the residual entering each block and the final residual.
- ``decomposed``: embed, pos_embed (learned positions), then attn and mlp of each layer.
- ``heads``: each head's output (z @ W_O) per layer; the attention bias ``b_O``
  is the difference between a layer's ``decomposed`` attn and its heads' sum.
- ``neurons``: each neuron of ``neuron_layer`` (post-activation times its W_out row).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.results import ExperimentResult

from .._common import (
    TokenLike,
    answer_metrics,
    check_layer,
    check_position,
    final_norm_linear,
    head_labels,
    layer_labels,
    logit_direction,
    resolve_answers,
    resolve_tokens,
    str_tokens,
)


@dataclasses.dataclass(frozen=True)
class DLARequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    answer: TokenLike = 0
    wrong_answer: Optional[TokenLike] = None
    position: int = -1
    neuron_layer: Optional[int] = None  # None: the last layer
    top_k_neurons: int = 10


@dataclasses.dataclass
class DLAResult(ExperimentResult):
    kind = "dla"
    accumulated: torch.Tensor  # [n_layers + 1]
    decomposed: torch.Tensor  # [component]
    heads: torch.Tensor  # [layer, head]
    neurons: torch.Tensor  # [d_mlp] for neuron_layer
    top_neurons: torch.Tensor  # [k] indices into neurons, by absolute attribution
    accumulated_labels: list
    component_labels: list
    head_labels: list  # flat, layer-major
    layer_labels: list
    bias_total: float  # final-norm bias . direction + unembedding bias
    logit_diff: float  # the model's actual metric at the position
    neuron_layer: int
    position: int
    answer_id: int
    wrong_answer_id: Optional[int]
    str_tokens: list
    uncapped_logit_diff: float = float("nan")  # the metric before final-logit soft-capping (= logit_diff without it)
    soft_capped: bool = False


@torch.inference_mode()
def direct_logit_attribution(model, request: DLARequest) -> DLAResult:
    cfg = model.cfg
    tokens = resolve_tokens(model, request.prompt, request.tokens)
    pos = check_position(request.position, tokens.shape[1])
    answer, wrong = resolve_answers(model, request)
    neuron_layer = cfg.n_layers - 1 if request.neuron_layer is None else check_layer(model, request.neuron_layer, "neuron_layer")
    n = cfg.n_layers

    has_pos_embed = "hook_pos_embed" in model.hook_dict
    names = ["hook_embed", "ln_final.hook_scale", f"blocks.{n - 1}.hook_resid_post", f"blocks.{neuron_layer}.mlp.hook_post"]
    names += ["hook_pos_embed"] if has_pos_embed else []
    for l in range(n):
        names += [f"blocks.{l}.hook_resid_pre", f"blocks.{l}.hook_attn_out", f"blocks.{l}.hook_mlp_out", f"blocks.{l}.attn.hook_z"]
        names += [f"blocks.{l}.{which}.hook_scale" for which in ("ln1_post", "ln2_post") if f"blocks.{l}.{which}.hook_scale" in model.hook_dict]
    logits, cache = model.run_with_cache(tokens, names_filter=names)
    at = lambda name: cache[name][0, pos]  # noqa: E731  [d_model] (or [head, d_head])

    direction, unembed_bias = logit_direction(model, answer, wrong)
    scale = cache["ln_final.hook_scale"][0, pos]  # [1]
    project = lambda stack: final_norm_linear(model, stack, scale) @ direction  # noqa: E731
    ln_b = getattr(model.ln_final, "b", None)
    bias_total = unembed_bias + (float(ln_b.float() @ direction) if ln_b is not None else 0.0)

    accumulated = project(torch.stack([at(f"blocks.{l}.hook_resid_pre") for l in range(n)] + [at(f"blocks.{n - 1}.hook_resid_post")]))

    parts, labels = [at("hook_embed")], ["embed"]
    if has_pos_embed:
        parts.append(at("hook_pos_embed"))
        labels.append("pos_embed")
    for l in range(n):
        parts += [at(f"blocks.{l}.hook_attn_out"), at(f"blocks.{l}.hook_mlp_out")]
        labels += [f"L{l} attn", f"L{l} mlp"]
    decomposed = project(torch.stack(parts))

    # Per-head outputs [layer, head, d_model] at the position: z_h @ W_O[h].
    z = torch.stack([at(f"blocks.{l}.attn.hook_z") for l in range(n)])  # [layer, head, d_head]
    head_out = torch.einsum("lhe,lhed->lhd", z.float(), model.W_O.float())
    head_out = torch.stack([_post_norm(model, cache, l, "ln1_post", pos, head_out[l]) for l in range(n)])
    heads = project(head_out)

    # Per-neuron: post[n] * W_out[n]; the frozen norm is linear, so project W_out's rows once.
    post = at(f"blocks.{neuron_layer}.mlp.hook_post").float()  # [d_mlp]
    neurons = post * project(_post_norm(model, cache, neuron_layer, "ln2_post", pos, model.blocks[neuron_layer].mlp.W_out.float()))
    k = max(1, min(int(request.top_k_neurons), neurons.numel()))
    top_neurons = neurons.abs().topk(k).indices

    actual, _ = answer_metrics(logits[0, pos], answer, wrong)
    soft_capped = cfg.output_logits_soft_cap > 0
    uncapped = float(decomposed.sum()) + bias_total if soft_capped else float(actual)
    return DLAResult(
        accumulated=accumulated.cpu(),
        decomposed=decomposed.cpu(),
        heads=heads.cpu(),
        neurons=neurons.cpu(),
        top_neurons=top_neurons.cpu(),
        accumulated_labels=layer_labels(n) + ["final"],
        component_labels=labels,
        head_labels=head_labels(n, cfg.n_heads),
        layer_labels=layer_labels(n),
        bias_total=bias_total,
        logit_diff=float(actual),
        neuron_layer=neuron_layer,
        position=pos,
        answer_id=answer,
        wrong_answer_id=wrong,
        str_tokens=str_tokens(model, tokens[0].tolist()),
        uncapped_logit_diff=uncapped,
        soft_capped=soft_capped,
    )


def _post_norm(model, cache, layer: int, which: str, pos: int, vectors: torch.Tensor) -> torch.Tensor:
    """``vectors [..., d_model]`` written into layer's sublayer output, carried through its post-norm (frozen
    scale, times its weight); unchanged when the model has no post-norms."""
    norm = getattr(model.blocks[layer], which, None)
    if norm is None:
        return vectors
    x = vectors / cache[f"blocks.{layer}.{which}.hook_scale"][0, pos].float()
    return x * norm.w.float() if getattr(norm, "w", None) is not None else x
