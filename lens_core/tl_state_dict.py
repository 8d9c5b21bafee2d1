"""Reading a TransformerLens ``HookedTransformer`` state dict (``model.load_state_dict(torch.load(...))``).

TransformerLens stores ``blocks.l.attn.W_Q`` ``[head, d_model, d_head]`` (and W_K, W_V, b_Q, b_K, b_V)
separately, ``unembed.W_U`` as ``[d_model, d_vocab]``, norms as ``ln.w``/``ln.b`` and two buffers per
attention layer (``mask``, ``IGNORE``). Ours fuses q|k|v into ``attn.W_QKV`` and stores the unembedding
like the embedding; :func:`from_tl` converts, so a TransformerLens checkpoint (the ARENA chapter's
attention-only model, say) loads unchanged. Keys already in our layout pass through.
"""

from __future__ import annotations

import re
from typing import Any

import torch

_BUFFERS = re.compile(r"^blocks\.\d+\.attn\.(mask|IGNORE)$|\.rotary_(sin|cos)$")


def looks_like_tl(state_dict: dict) -> bool:
    return any(key.endswith(".attn.W_Q") for key in state_dict) or "unembed.W_U" in state_dict


def from_tl(model: Any, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A TransformerLens state dict in this model's names and layout."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if _BUFFERS.search(key):
            continue
        match = re.match(r"^blocks\.(\d+)\.attn\.(W|b)_(Q|K|V)$", key)
        if match:
            fused.setdefault(int(match.group(1)), {})[f"{match.group(2)}_{match.group(3)}"] = value
        elif key == "unembed.W_U":
            out["unembed.weight"] = value.T.contiguous()
        else:
            out[key] = value
    for layer, parts in fused.items():
        missing = {"W_Q", "W_K", "W_V"} - set(parts)
        if missing:
            raise KeyError(f"blocks.{layer}.attn: the TransformerLens state dict lacks {sorted(missing)}")
        # [head, d_model, d_head] -> [d_model, head * d_head], q heads then k heads then v heads
        out[f"blocks.{layer}.attn.W_QKV"] = torch.cat([parts[n].permute(1, 0, 2).flatten(1) for n in ("W_Q", "W_K", "W_V")], dim=1)
        if all(f"b_{n}" in parts for n in "QKV"):
            out[f"blocks.{layer}.attn.b_QKV"] = torch.cat([parts[f"b_{n}"].flatten() for n in "QKV"])
        else:
            out[f"blocks.{layer}.attn.b_QKV"] = torch.zeros(model.blocks[layer].attn.b_QKV.shape)
    return out
