"""Attention patterns of every head for one prompt, for the attention page."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.results import ExperimentResult

from .._common import resolve_tokens, str_tokens


@dataclasses.dataclass(frozen=True)
class AttentionRequest:
    prompt: Optional[str] = None
    tokens: Optional[tuple[int, ...]] = None


@dataclasses.dataclass
class AttentionResult(ExperimentResult):
    kind = "attention_patterns"
    patterns: torch.Tensor  # [layer, head, query_pos, key_pos], float32 on cpu
    str_tokens: list  # [pos]


@torch.inference_mode()
def attention_patterns(model, request: AttentionRequest) -> AttentionResult:
    """Every layer's ``hook_pattern`` for the prompt, stacked."""
    tokens = resolve_tokens(model, request.prompt, request.tokens, "prompt")
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    patterns = torch.stack([cache["pattern", layer][0] for layer in range(model.cfg.n_layers)])
    return AttentionResult(patterns=patterns.float().cpu(), str_tokens=str_tokens(model, tokens[0].tolist()))
