"""Small computations the first pages need that ``lens_core.experiments`` does not (yet) provide.

They use only the core API (``run_with_cache``) and return ``ExperimentResult``s so
they go through ``cache_store`` like any experiment. Move each into
``lens_core.experiments`` when it grows beyond reading a cached activation.
"""

from __future__ import annotations

import dataclasses

import torch

from lens_core.results import ExperimentResult


@dataclasses.dataclass
class AttentionPatternsResult(ExperimentResult):
    kind = "app_attention_patterns"
    patterns: torch.Tensor  # [layer, head, query_pos, key_pos], float32 on cpu
    str_tokens: list  # [pos]


@torch.inference_mode()
def attention_patterns(model, tokens: torch.Tensor) -> AttentionPatternsResult:
    """Every layer's attention pattern for one prompt (``tokens`` is ``[1, pos]``)."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    patterns = torch.stack([cache["pattern", layer][0] for layer in range(model.cfg.n_layers)])
    return AttentionPatternsResult(
        patterns=patterns.float().cpu(),
        str_tokens=list(model.to_str_tokens(tokens[0])),
    )
