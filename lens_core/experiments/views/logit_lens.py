"""Logit lens: read the residual stream at every layer through the final norm and unembedding.

Rows are the residual entering each block (``L0`` ... ``L{n-1}``: ``resid_pre``)
and the final residual (``final``, after the last block), so the last row is
exactly the model's own output.

``ln_mode``:
- ``"recomputed"`` (default): each layer's residual is normalised with its own
  scale, as if the model stopped there. This is the standard logit lens: the
  residual's norm grows with depth, so dividing early layers by the final
  layer's (much larger) scale shrinks their logits towards zero and every
  early distribution looks uniform, hiding what the layer already predicts.
- ``"frozen"``: every layer is divided by the scale the final norm actually
  used on the final residual (``ln_final.hook_scale``). The map is then linear,
  the same one direct logit attribution uses, so rows are comparable as
  additive contributions rather than as stand-alone predictions.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.results import ExperimentResult

from .._common import TokenLike, final_norm, layer_labels, resolve_token, resolve_tokens, str_tokens, unembed

LN_MODES = ("recomputed", "frozen")


@dataclasses.dataclass(frozen=True)
class LogitLensRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    targets: tuple[TokenLike, ...] = ()
    top_k: int = 5
    ln_mode: str = "recomputed"


@dataclasses.dataclass
class LogitLensResult(ExperimentResult):
    kind = "logit_lens"
    top_token_ids: torch.Tensor  # [layer (n_layers + 1), pos, k]
    top_probs: torch.Tensor  # [layer, pos, k]
    target_logits: torch.Tensor  # [layer, pos, target]
    target_probs: torch.Tensor  # [layer, pos, target]
    layer_labels: list  # "L0" .. "L{n-1}" (resid_pre), "final"
    str_tokens: list  # [pos]
    top_tokens: list  # [layer][pos][k]
    target_ids: list
    target_labels: list
    ln_mode: str


@torch.inference_mode()
def logit_lens(model, request: LogitLensRequest) -> LogitLensResult:
    if request.ln_mode not in LN_MODES:
        raise ValueError(f"ln_mode must be one of {LN_MODES}, got {request.ln_mode!r}")
    tokens = resolve_tokens(model, request.prompt, request.tokens)
    targets = [resolve_token(model, t, "target") for t in request.targets]
    n = model.cfg.n_layers
    names = [f"blocks.{l}.hook_resid_pre" for l in range(n)] + [f"blocks.{n - 1}.hook_resid_post", "ln_final.hook_scale"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    resid = torch.stack([cache[f"blocks.{l}.hook_resid_pre"][0] for l in range(n)] + [cache[f"blocks.{n - 1}.hook_resid_post"][0]])
    scale = cache["ln_final.hook_scale"][0] if request.ln_mode == "frozen" else None  # [pos, 1]
    logits = unembed(model, final_norm(model, resid, scale)).float()  # [layer, pos, d_vocab]
    probs = logits.softmax(-1)
    k = max(1, min(int(request.top_k), model.cfg.d_vocab_out))
    top_probs, top_ids = probs.topk(k, dim=-1)
    index = torch.tensor(targets, dtype=torch.long, device=logits.device)
    return LogitLensResult(
        top_token_ids=top_ids.cpu(),
        top_probs=top_probs.cpu(),
        target_logits=logits[..., index].cpu(),
        target_probs=probs[..., index].cpu(),
        layer_labels=layer_labels(n) + ["final"],
        str_tokens=str_tokens(model, tokens[0].tolist()),
        top_tokens=[[str_tokens(model, row.tolist()) for row in layer] for layer in top_ids],
        target_ids=targets,
        target_labels=str_tokens(model, targets),
        ln_mode=request.ln_mode,
    )
