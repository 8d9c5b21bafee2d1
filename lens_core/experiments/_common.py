"""Helpers shared by the experiments: inputs, labels, the final norm + unembed, metrics.

Axis vocabulary used by every experiment (and its result's labels):
``layer`` ("L3"), ``head`` ("L3H1"), ``pos`` (token strings, one per position),
``d_model``, ``d_vocab``, ``neuron``.
"""

from __future__ import annotations

import dataclasses

import numbers
from typing import Optional, Sequence, Union

import torch

TokenLike = Union[int, str]


# ---- inputs -------------------------------------------------------------------
def resolve_tokens(model, prompt: Optional[str], tokens: Optional[Sequence[int]], what: str = "prompt") -> torch.Tensor:
    """A request's prompt (text) or token ids as ``LongTensor[1, pos]`` on the model's device."""
    if (prompt is None) == (tokens is None):
        raise ValueError(f"give exactly one of {what} text or {what} token ids")
    if tokens is not None:
        ids = torch.as_tensor(list(tokens), dtype=torch.long).reshape(1, -1)
        if ids.numel() == 0:
            raise ValueError(f"{what} has no tokens")
        if int(ids.min()) < 0 or int(ids.max()) >= model.cfg.d_vocab:
            raise ValueError(f"{what} token ids must lie in [0, {model.cfg.d_vocab})")
    else:
        ids = model.to_tokens(prompt)
    if ids.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"{what} is {ids.shape[1]} tokens, longer than the model's context ({model.cfg.n_ctx})")
    return ids.to(model.cfg.device)


def resolve_token(model, token: TokenLike, what: str = "answer") -> int:
    """A target given as a token id or as text that must be exactly one token."""
    if isinstance(token, bool) or token is None:
        raise ValueError(f"{what} must be a token id or a single-token string, got {token!r}")
    if isinstance(token, numbers.Integral):
        token = int(token)
        if not 0 <= token < model.cfg.d_vocab_out:
            raise ValueError(f"{what} token id {token} is outside the vocabulary [0, {model.cfg.d_vocab_out})")
        return token
    try:
        return int(model.to_single_token(token))
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def resolve_answers(model, request) -> tuple[int, Optional[int]]:
    """A request's ``answer`` and optional ``wrong_answer`` as token ids (the metric is their logit difference)."""
    answer = resolve_token(model, request.answer, "answer")
    wrong = None if request.wrong_answer is None else resolve_token(model, request.wrong_answer, "wrong answer")
    return answer, wrong


@dataclasses.dataclass(frozen=True)
class ContrastRequest:
    """A clean prompt (the behaviour), a corrupted one of the same token length (the behaviour
    broken), each as text or token ids, and the answer the metric reads."""

    clean_prompt: Optional[str] = None
    corrupted_prompt: Optional[str] = None
    clean_tokens: Optional[tuple[int, ...]] = None
    corrupted_tokens: Optional[tuple[int, ...]] = None
    answer: TokenLike = 0
    wrong_answer: Optional[TokenLike] = None


def contrast_tokens(model, request: ContrastRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, corrupted) token ids ``[1, pos]`` each; a clear error if their lengths differ."""
    clean = resolve_tokens(model, request.clean_prompt, request.clean_tokens, "clean prompt")
    corrupted = resolve_tokens(model, request.corrupted_prompt, request.corrupted_tokens, "corrupted prompt")
    if clean.shape[1] != corrupted.shape[1]:
        raise ValueError(
            f"clean and corrupted prompts must have the same number of tokens: clean has {clean.shape[1]}, "
            f"corrupted has {corrupted.shape[1]}"
        )
    return clean, corrupted


def str_tokens(model, ids: Sequence[int]) -> list[str]:
    """Token strings for labels; ``<id>`` when the model has no tokenizer."""
    ids = [int(i) for i in ids]
    if getattr(model, "tokenizer", None) is None:
        return [f"<{i}>" for i in ids]
    return list(model.to_str_tokens(torch.tensor(ids)))


def check_layer(model, layer: int, what: str = "layer", allow_end: bool = False) -> int:
    n = model.cfg.n_layers
    top = n if allow_end else n - 1
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= top:
        raise ValueError(f"{what} must be an integer in [0, {top}] for this {n}-layer model, got {layer!r}")
    return layer


def check_head(model, layer: int, head: int, what: str = "head") -> tuple[int, int]:
    check_layer(model, layer, f"{what} layer")
    if not isinstance(head, int) or not 0 <= head < model.cfg.n_heads:
        raise ValueError(f"{what} index must be in [0, {model.cfg.n_heads}), got {head!r}")
    return layer, head


def check_position(pos: int, n_pos: int, what: str = "position") -> int:
    if not -n_pos <= pos < n_pos:
        raise ValueError(f"{what} {pos} is outside the prompt's {n_pos} tokens")
    return pos % n_pos


# ---- labels -------------------------------------------------------------------
def layer_labels(n_layers: int) -> list[str]:
    return [f"L{l}" for l in range(n_layers)]


def head_labels(n_layers: int, n_heads: int, prefix: str = "H") -> list[str]:
    """Flat labels ``L{l}H{h}``, layer-major (the order of ``tensor.reshape(-1)`` on ``[layer, head]``)."""
    return [f"L{l}{prefix}{h}" for l in range(n_layers) for h in range(n_heads)]


# ---- final norm and unembedding -------------------------------------------------
def final_norm(model, resid: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The model's final norm applied to ``resid [..., d_model]``.

    ``scale=None`` recomputes the norm's scale from ``resid``; a given ``scale``
    (``[..., 1]``, e.g. the cached ``ln_final.hook_scale``) is used as is, which
    makes the map linear up to the bias (what direct logit attribution needs).
    """
    ln = model.ln_final
    kind = model.cfg.normalization_type
    x = resid.float()
    if kind in ("LN", "LNPre"):
        x = x - x.mean(-1, keepdim=True)
    if scale is None:
        scale = (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    x = x / scale
    w = getattr(ln, "w", None)
    if w is not None:
        x = x * w
    b = getattr(ln, "b", None)
    if b is not None:
        x = x + b
    return x.to(resid.dtype)


def final_norm_linear(model, stack: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The linear part of the final norm with a frozen ``scale``: centre (LN), divide, times the weight.

    Applied to each component of a residual decomposition, the parts sum to
    ``final_norm(resid, scale) - ln_final.b``: the bias is accounted separately.
    """
    x = stack.float()
    if model.cfg.normalization_type in ("LN", "LNPre"):
        x = x - x.mean(-1, keepdim=True)
    x = x / scale
    w = getattr(model.ln_final, "w", None)
    if w is not None:
        x = x * w
    return x


def unembed(model, x: torch.Tensor) -> torch.Tensor:
    return capped(model, x @ model.W_U + model.b_U)


def capped(model, logits: torch.Tensor) -> torch.Tensor:
    """The model's final-logit soft-capping (Gemma 2: ``cap * tanh(logits / cap)``), elementwise, so it may be
    applied to a few vocabulary columns alone; the identity for models without it."""
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0)
    return logits if cap is None or cap <= 0 else torch.tanh(logits / cap) * cap


# ---- metrics at one position ------------------------------------------------------
def answer_metrics(logits: torch.Tensor, answer: int, wrong: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """From logits ``[..., d_vocab]``: (logit difference answer - wrong, or the answer's logit when
    there is no wrong answer; probability of the answer)."""
    logits = logits.float()
    diff = logits[..., answer] - (logits[..., wrong] if wrong is not None else 0.0)
    prob = logits.softmax(-1)[..., answer]
    return diff, prob


def loss_per_token(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy ``[batch, pos - 1]``."""
    logprobs = logits[:, :-1].float().log_softmax(-1)
    return -logprobs.gather(-1, tokens[:, 1:, None])[..., 0]


def logit_direction(model, answer: int, wrong: Optional[int]) -> tuple[torch.Tensor, float]:
    """The unembedding direction ``[d_model]`` of the metric and its constant bias term."""
    direction = model.W_U[:, answer].float()
    bias = float(model.b_U[answer])
    if wrong is not None:
        direction = direction - model.W_U[:, wrong].float()
        bias -= float(model.b_U[wrong])
    return direction, bias
