"""Shortformer positions (TransformerLens's ``positional_embedding_type="shortformer"``).

The learned positional embedding is not added to the residual stream: it is added to the input of
the queries and keys of every attention layer (after ``ln1``), never to the values. ``hook_pos_embed``
still fires once per run, and what leaves it (a hook may patch it) is what every layer adds: the
forward pass keeps it in a context variable for the duration of the call, so threads never see each
other's. A block run on its own (``start_at_layer``, or called directly) recomputes it from ``W_pos``.
"""

from __future__ import annotations

import contextvars
from typing import Any, Optional

import torch

from .padding import position_ids

# The hooked positional embedding [batch, pos, d_model] of the current forward call, in this thread.
CURRENT: contextvars.ContextVar[Optional[torch.Tensor]] = contextvars.ContextVar("lens_core_shortformer_pos", default=None)


def pos_for(pos_embed: Any, batch: int, n_new: int, offset: int, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The positional embedding added to queries and keys of positions ``offset..offset+n_new``."""
    current = CURRENT.get()
    if current is not None and offset == 0 and current.shape[:2] == (batch, n_new):
        return current
    if attention_mask is not None:
        ids = position_ids(attention_mask, offset)
        return pos_embed.W_pos[ids].masked_fill(~attention_mask[:, offset:].bool()[..., None], 0.0)
    return pos_embed.W_pos[offset:offset + n_new].unsqueeze(0).expand(batch, n_new, -1)


def qkv_with_positions(attn: Any, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The fused q|k|v projection [batch, pos, q + k + v] with ``pos`` added to the q and k inputs only."""
    d_model = x.shape[-1]
    n_qk = attn.split[0] + attn.split[1]
    qk = torch.addmm(attn.b_QKV[:n_qk], (x + pos).reshape(-1, d_model), attn.W_QKV[:, :n_qk])
    v = torch.addmm(attn.b_QKV[n_qk:], x.reshape(-1, d_model), attn.W_QKV[:, n_qk:])
    return torch.cat([qk, v], dim=-1).view(*x.shape[:2], -1)
