"""Shared readers for the Hugging Face layouts of the newer gated-MLP families (Gemma 2/3, Qwen3, OLMo 2).

Each family file says which norms it has and where; these helpers read the parts they have in common:
q/k/v/o projections (biases when present), the gated MLP, q/k norms, the final norm and the head,
and the per-layer attention layout (sliding-window and global layers) from ``layer_types``.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..config import HookedTransformerConfig
from .reader import WeightReader, zeros

ACTS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_new", "gelu_new": "gelu_new", "relu": "relu"}


def activation(name: str) -> str:
    if name not in ACTS:
        raise ValueError(f"unsupported activation {name!r}")
    return ACTS[name]


def attention_layout(hf) -> tuple[Optional[list], Optional[int]]:
    """(attn_types, window_size) from ``layer_types`` ("sliding_attention" -> "local", "full_attention" -> "global")."""
    kinds = list(getattr(hf, "layer_types", None) or [])
    window = getattr(hf, "sliding_window", None)
    if not kinds or "sliding_attention" not in kinds or not window:
        return None, None
    unknown = set(kinds) - {"sliding_attention", "full_attention"}
    if unknown:
        raise ValueError(f"unsupported attention layer types {sorted(unknown)}")
    return ["local" if k == "sliding_attention" else "global" for k in kinds], int(window)


def base_config(hf, **fields) -> HookedTransformerConfig:
    d_head = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    attn_types, window = attention_layout(hf)
    return HookedTransformerConfig(
        n_layers=hf.num_hidden_layers, d_model=hf.hidden_size, n_heads=hf.num_attention_heads, d_head=d_head,
        d_mlp=hf.intermediate_size, d_vocab=hf.vocab_size, n_ctx=hf.max_position_embeddings,
        n_key_value_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
        eps=hf.rms_norm_eps, normalization_type="RMS", gated_mlp=True, positional_embedding_type="rotary",
        rotary_dim=d_head, attn_types=attn_types, window_size=window,
        original_architecture=(hf.architectures or [type(hf).__name__])[0], **fields,
    )


def norm(r: WeightReader, name: str, d: int, offset: float) -> torch.Tensor:
    """A norm weight; ``offset=1`` for Gemma's ``x * (1 + weight)``, stored here as the whole factor."""
    w = r.get(name, (d,))
    return w + offset if offset else w


def attention(r: WeightReader, cfg: HookedTransformerConfig, p: str, out: str, sd: dict) -> None:
    d, h, kv, e = cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head
    projections = (("q_proj", h), ("k_proj", kv), ("v_proj", kv))
    weights = [r.get(p + f"self_attn.{proj}.weight", (heads * e, d)) for proj, heads in projections]
    sd[out + "attn.W_QKV"] = torch.cat(weights).T.contiguous()  # [d_model, (q | k | v heads) * d_head]
    biases = [r.optional(p + f"self_attn.{proj}.bias", (heads * e,)) for proj, heads in projections]
    sd[out + "attn.b_QKV"] = torch.cat([zeros(n * e) if b is None else b for b, (_, n) in zip(biases, projections)])
    sd[out + "attn.W_O"] = r.get(p + "self_attn.o_proj.weight", (d, h * e)).T.contiguous().reshape(h, e, d)
    b_o = r.optional(p + "self_attn.o_proj.bias", (d,))
    sd[out + "attn.b_O"] = zeros(d) if b_o is None else b_o


def qk_norms(r: WeightReader, cfg: HookedTransformerConfig, p: str, out: str, sd: dict, offset: float = 0.0) -> None:
    per_head = cfg.qk_norm == "head"
    for which, n in (("q", cfg.n_heads), ("k", cfg.n_key_value_heads)):
        sd[out + f"attn.{which}_norm.w"] = norm(r, p + f"self_attn.{which}_norm.weight", cfg.d_head * (1 if per_head else n), offset)


def gated_mlp(r: WeightReader, cfg: HookedTransformerConfig, p: str, out: str, sd: dict) -> None:
    d, m = cfg.d_model, cfg.d_mlp
    if r.has(p + "mlp.gate_proj.bias") or r.has(p + "mlp.up_proj.bias"):
        raise ValueError("MLP biases are not supported for this family")
    sd[out + "mlp.W_gate"] = r.get(p + "mlp.gate_proj.weight", (m, d)).T.contiguous()
    sd[out + "mlp.W_in"] = r.get(p + "mlp.up_proj.weight", (m, d)).T.contiguous()
    sd[out + "mlp.b_in"] = zeros(m)
    sd[out + "mlp.W_out"] = r.get(p + "mlp.down_proj.weight", (d, m)).T.contiguous()
    sd[out + "mlp.b_out"] = zeros(d)


def final_and_head(r: WeightReader, cfg: HookedTransformerConfig, sd: dict, offset: float = 0.0) -> dict:
    sd["ln_final.w"] = norm(r, "norm.weight", cfg.d_model, offset)
    head = r.optional("lm_head.weight", (cfg.d_vocab, cfg.d_model))
    sd["unembed.weight"] = head if head is not None else sd["embed.W_E"]
    sd["unembed.b_U"] = zeros(cfg.d_vocab)
    return sd


def convert_blocks(r: WeightReader, cfg: HookedTransformerConfig, norms: dict, offset: float = 0.0,
                   qk_offset: Optional[float] = None) -> dict:
    """The whole state dict of a gated-MLP family: embeddings, each block (its norms named in ``norms``,
    ours -> the checkpoint's, e.g. ``{"ln1": "input_layernorm"}``; attention; q/k norms when ``qk_offset``
    is given; the MLP), the final norm and the head. ``offset`` is added to every norm weight (Gemma's 1)."""
    d = cfg.d_model
    sd = {"embed.W_E": r.get("embed_tokens.weight", (cfg.d_vocab, d))}
    for l in range(cfg.n_layers):
        p, out = f"layers.{l}.", f"blocks.{l}."
        for ours, theirs in norms.items():
            sd[out + ours + ".w"] = norm(r, p + theirs + ".weight", d, offset)
        attention(r, cfg, p, out, sd)
        if qk_offset is not None:
            qk_norms(r, cfg, p, out, sd, qk_offset)
        gated_mlp(r, cfg, p, out, sd)
    return final_and_head(r, cfg, sd, offset)
