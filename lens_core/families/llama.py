"""The Llama family (Llama, Mistral, Qwen2): RMSNorm, rotary, gated SiLU MLP, grouped-query attention.

Qwen2 differs only in data: biases on q/k/v (read when present).
"""

from __future__ import annotations

import torch

from ..config import HookedTransformerConfig
from .reader import WeightReader, rope_settings, zeros

PREFIXES = ("model.",)


def config_from_hf(hf) -> HookedTransformerConfig:
    act = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_new", "relu": "relu"}
    if hf.hidden_act not in act:
        raise ValueError(f"unsupported activation {hf.hidden_act!r}")
    base, fraction, scaling = rope_settings(hf)
    d_head = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    return HookedTransformerConfig(
        n_layers=hf.num_hidden_layers, d_model=hf.hidden_size, n_heads=hf.num_attention_heads, d_head=d_head,
        d_mlp=hf.intermediate_size, d_vocab=hf.vocab_size, n_ctx=hf.max_position_embeddings,
        n_key_value_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
        act_fn=act[hf.hidden_act], eps=hf.rms_norm_eps, normalization_type="RMS", gated_mlp=True,
        positional_embedding_type="rotary", rotary_dim=int(d_head * fraction), rotary_base=base, rope_scaling=scaling,
        original_architecture=(hf.architectures or [type(hf).__name__])[0],
    )


def convert(r: WeightReader, cfg: HookedTransformerConfig) -> dict:
    d, h, kv, e, m, V = cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab
    sd = {"embed.W_E": r.get("embed_tokens.weight", (V, d))}
    for l in range(cfg.n_layers):
        p, out = f"layers.{l}.", f"blocks.{l}."
        sd[out + "ln1.w"] = r.get(p + "input_layernorm.weight", (d,))
        sd[out + "ln2.w"] = r.get(p + "post_attention_layernorm.weight", (d,))
        projections = (("q_proj", h), ("k_proj", kv), ("v_proj", kv))
        weights = [r.get(p + f"self_attn.{proj}.weight", (heads * e, d)) for proj, heads in projections]
        sd[out + "attn.W_QKV"] = torch.cat(weights).T.contiguous()  # [d_model, (q | k | v heads) * d_head]
        biases = [r.optional(p + f"self_attn.{proj}.bias", (heads * e,)) for proj, heads in projections]
        sd[out + "attn.b_QKV"] = torch.cat([zeros(heads * e) if b is None else b for b, (_, heads) in zip(biases, projections)])
        sd[out + "attn.W_O"] = r.get(p + "self_attn.o_proj.weight", (d, h * e)).T.contiguous().reshape(h, e, d)
        b_o = r.optional(p + "self_attn.o_proj.bias", (d,))
        sd[out + "attn.b_O"] = zeros(d) if b_o is None else b_o
        if r.has(p + "mlp.gate_proj.bias"):
            raise ValueError("MLP gate biases are not supported")
        sd[out + "mlp.W_gate"] = r.get(p + "mlp.gate_proj.weight", (m, d)).T.contiguous()
        sd[out + "mlp.W_in"] = r.get(p + "mlp.up_proj.weight", (m, d)).T.contiguous()
        b_in = r.optional(p + "mlp.up_proj.bias", (m,))
        sd[out + "mlp.b_in"] = zeros(m) if b_in is None else b_in
        sd[out + "mlp.W_out"] = r.get(p + "mlp.down_proj.weight", (d, m)).T.contiguous()
        b_out = r.optional(p + "mlp.down_proj.bias", (d,))
        sd[out + "mlp.b_out"] = zeros(d) if b_out is None else b_out
    sd["ln_final.w"] = r.get("norm.weight", (d,))
    head = r.optional("lm_head.weight", (V, d))
    sd["unembed.weight"] = head if head is not None else sd["embed.W_E"]
    sd["unembed.b_U"] = zeros(V)
    return sd
