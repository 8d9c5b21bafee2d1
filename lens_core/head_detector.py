"""TransformerLens's head detector (``detect_head``), with its pattern names, options and scores.

``detect_head(model, seq, "induction_head")`` scores every head against a detection pattern
(a ``[pos, pos]`` lower-triangular matrix: where such a head should attend). Scored all heads at
once from one run that keeps only the attention patterns. For the app's detectors (averaged over
query positions, repeated random tokens) see ``lens_core.experiments.views.detectors``.
"""

from __future__ import annotations

import logging
from typing import Optional, Union

import torch

HEAD_NAMES = ["previous_token_head", "duplicate_token_head", "induction_head"]
ERROR_MEASURES = ("abs", "mul")


def get_previous_token_head_detection_pattern(tokens: torch.Tensor) -> torch.Tensor:
    n = tokens.shape[-1]
    pattern = torch.zeros(n, n)
    pattern[1:, :-1] = torch.eye(n - 1)
    return pattern


def get_duplicate_token_head_detection_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """1 where an earlier position holds the same token as the query position."""
    row = tokens.reshape(-1)
    same = (row[:, None] == row[None, :]).float()
    same.fill_diagonal_(0)
    return torch.tril(same)


def get_induction_head_detection_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """1 on the token after each earlier copy of the query token."""
    duplicate = get_duplicate_token_head_detection_pattern(tokens)
    shifted = torch.zeros_like(duplicate)
    shifted[:, 1:] = duplicate[:, :-1]
    return torch.tril(shifted)


PATTERNS = {"previous_token_head": get_previous_token_head_detection_pattern,
            "duplicate_token_head": get_duplicate_token_head_detection_pattern,
            "induction_head": get_induction_head_detection_pattern}


def get_supported_heads() -> None:
    print(f"Supported heads: {HEAD_NAMES}")


def detect_head(model, seq: Union[str, list[str]], detection_pattern: Union[torch.Tensor, str],
                heads: Optional[Union[list[tuple[int, int]], dict[int, list[int]]]] = None, cache=None, *,
                exclude_bos: bool = False, exclude_current_token: bool = False, error_measure: str = "mul") -> torch.Tensor:
    """Each head's match with ``detection_pattern`` (a name in ``HEAD_NAMES`` or a tensor): [n_layers, n_heads].

    ``"mul"``: the share of the head's attention on the pattern's ones. ``"abs"``: 1 minus the mean
    absolute difference times the sequence length, rounded to 3 decimals. Heads not in ``heads``
    score -1. A list of prompts (named patterns only) averages the scores of each prompt.
    """
    cfg = model.cfg
    if error_measure not in ERROR_MEASURES:
        raise ValueError(f"Invalid error_measure={error_measure}; valid values are {ERROR_MEASURES}")
    if isinstance(detection_pattern, str):
        if detection_pattern not in PATTERNS:
            raise ValueError(f"detection_pattern must be a Tensor or one of head names: {HEAD_NAMES}; got {detection_pattern}")
        if isinstance(seq, list):
            if cache is not None:
                raise ValueError("a cache holds one prompt: pass one prompt at a time with a cache")
            return torch.stack([detect_head(model, s, detection_pattern, heads, exclude_bos=exclude_bos,
                                            exclude_current_token=exclude_current_token, error_measure=error_measure)
                                for s in seq]).mean(0)
    tokens = model.to_tokens(seq)
    n_pos = tokens.shape[-1]
    if isinstance(detection_pattern, str):
        detection_pattern = PATTERNS[detection_pattern](tokens.cpu())
    if not 1 < n_pos < cfg.n_ctx:
        raise ValueError("The sequence must be non-empty and must fit within the model's context window.")
    if tuple(detection_pattern.shape) != (n_pos, n_pos) or not torch.equal(detection_pattern, torch.tril(detection_pattern)):
        raise ValueError(f"The detection pattern must be a lower triangular matrix of shape ({n_pos}, {n_pos}); "
                         f"got {tuple(detection_pattern.shape)}")
    if error_measure == "mul" and not set(detection_pattern.unique().tolist()) <= {0, 1}:
        logging.warning("Using detection pattern with values other than 0 or 1 with error_measure 'mul'")
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(cfg.n_layers)]
    if cache is None:
        _, cache = model.run_with_cache(tokens, names_filter=names, remove_batch_dim=True)
    patterns = torch.stack([cache["pattern", l] for l in range(cfg.n_layers)]).float().cpu()  # [layer, head, q, k]
    if patterns.dim() == 5:  # a cache that kept its batch axis
        patterns = patterns[:, :, 0] if patterns.shape[1] == 1 else patterns[:, 0]
    target = detection_pattern.float().cpu()
    keep = torch.ones(n_pos, n_pos)
    if exclude_bos:
        keep[:, 0] = 0
    if exclude_current_token:
        keep.fill_diagonal_(0)
    if error_measure == "mul":
        attention = patterns * keep
        scores = (attention * target).sum((-1, -2)) / attention.sum((-1, -2))
    else:
        diff = (patterns - target).abs() * keep
        scores = 1 - torch.round(diff.mean((-1, -2)) * n_pos * 1000) / 1000
    if heads is None:
        return scores.to(cfg.dtype)
    chosen = torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.bool)
    pairs = heads if isinstance(heads, list) else [(l, h) for l, hs in heads.items() for h in hs]
    for layer, head in pairs:
        chosen[layer, head] = True
    return torch.where(chosen, scores, torch.full_like(scores, -1.0)).to(cfg.dtype)
