"""Next-token predictions: the top-k tokens with probabilities at every position, and loss per token."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.results import ExperimentResult

from .._common import loss_per_token, resolve_tokens, str_tokens


@dataclasses.dataclass(frozen=True)
class PredictionsRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None
    top_k: int = 5


@dataclasses.dataclass
class PredictionsResult(ExperimentResult):
    kind = "predictions"
    top_token_ids: torch.Tensor  # [pos, k]
    top_probs: torch.Tensor  # [pos, k]
    loss_per_token: torch.Tensor  # [pos - 1]: loss of predicting token pos+1 at position pos
    top_tokens: list  # [pos][k] token strings
    str_tokens: list  # [pos]


@torch.inference_mode()
def predictions(model, request: PredictionsRequest) -> PredictionsResult:
    tokens = resolve_tokens(model, request.prompt, request.tokens)
    k = min(int(request.top_k), model.cfg.d_vocab_out)
    if k < 1:
        raise ValueError("top_k must be at least 1")
    logits = model(tokens)
    probs = logits[0].float().softmax(-1)
    top_probs, top_ids = probs.topk(k, dim=-1)
    return PredictionsResult(
        top_token_ids=top_ids.cpu(),
        top_probs=top_probs.cpu(),
        loss_per_token=loss_per_token(logits, tokens)[0].cpu(),
        top_tokens=[str_tokens(model, row.tolist()) for row in top_ids],
        str_tokens=str_tokens(model, tokens[0].tolist()),
    )
