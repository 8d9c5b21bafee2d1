"""The Llama family (Llama, Mistral, Qwen2): RMSNorm, rotary, gated SiLU MLP, grouped-query attention.

Qwen2 differs only in data: biases on q/k/v (read when present).
"""

from __future__ import annotations

from ..config import HookedTransformerConfig
from . import gated
from .reader import WeightReader, rope_settings, zeros

PREFIXES = ("model.",)


def config_from_hf(hf) -> HookedTransformerConfig:
    base, fraction, scaling = rope_settings(hf)
    d_head = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    return HookedTransformerConfig(
        n_layers=hf.num_hidden_layers, d_model=hf.hidden_size, n_heads=hf.num_attention_heads, d_head=d_head,
        d_mlp=hf.intermediate_size, d_vocab=hf.vocab_size, n_ctx=hf.max_position_embeddings,
        n_key_value_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
        act_fn=gated.activation(hf.hidden_act), eps=hf.rms_norm_eps, normalization_type="RMS", gated_mlp=True,
        positional_embedding_type="rotary", rotary_dim=int(d_head * fraction), rotary_base=base, rope_scaling=scaling,
        original_architecture=(hf.architectures or [type(hf).__name__])[0],
    )


def convert(r: WeightReader, cfg: HookedTransformerConfig) -> dict:
    d, m, V = cfg.d_model, cfg.d_mlp, cfg.d_vocab
    sd = {"embed.W_E": r.get("embed_tokens.weight", (V, d))}
    for l in range(cfg.n_layers):
        p, out = f"layers.{l}.", f"blocks.{l}."
        sd[out + "ln1.w"] = r.get(p + "input_layernorm.weight", (d,))
        sd[out + "ln2.w"] = r.get(p + "post_attention_layernorm.weight", (d,))
        gated.attention(r, cfg, p, out, sd)
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
