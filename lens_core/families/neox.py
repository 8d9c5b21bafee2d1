"""GPT-NeoX / Pythia: rotary on part of each head, parallel attention + MLP, LayerNorm, untied unembed.

HF fuses q/k/v in one Linear whose output is laid out per head as [head, (q|k|v), d_head].
"""

from __future__ import annotations

from ..config import HookedTransformerConfig
from .reader import WeightReader, rope_settings, zeros

PREFIXES = ("gpt_neox.",)


def config_from_hf(hf) -> HookedTransformerConfig:
    act = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_fast": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu"}
    if hf.hidden_act not in act:
        raise ValueError(f"unsupported GPT-NeoX activation {hf.hidden_act!r}")
    base, fraction, scaling = rope_settings(hf)
    d_head = hf.hidden_size // hf.num_attention_heads
    return HookedTransformerConfig(
        n_layers=hf.num_hidden_layers, d_model=hf.hidden_size, n_heads=hf.num_attention_heads, d_head=d_head,
        d_mlp=hf.intermediate_size, d_vocab=hf.vocab_size, n_ctx=hf.max_position_embeddings,
        act_fn=act[hf.hidden_act], eps=hf.layer_norm_eps, normalization_type="LN",
        positional_embedding_type="rotary", rotary_dim=int(d_head * fraction), rotary_base=base, rope_scaling=scaling,
        parallel_attn_mlp=bool(getattr(hf, "use_parallel_residual", True)),
        original_architecture="GPTNeoXForCausalLM",
    )


def convert(r: WeightReader, cfg: HookedTransformerConfig) -> dict:
    d, h, e, m, V = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab
    sd = {"embed.W_E": r.get("embed_in.weight", (V, d))}
    for l in range(cfg.n_layers):
        p, out = f"layers.{l}.", f"blocks.{l}."
        sd[out + "ln1.w"], sd[out + "ln1.b"] = r.get(p + "input_layernorm.weight", (d,)), r.get(p + "input_layernorm.bias", (d,))
        sd[out + "ln2.w"] = r.get(p + "post_attention_layernorm.weight", (d,))
        sd[out + "ln2.b"] = r.get(p + "post_attention_layernorm.bias", (d,))
        # [head, (q|k|v), d_head, d_model] -> [d_model, (q heads | k heads | v heads) * d_head]
        w_qkv = r.get(p + "attention.query_key_value.weight", (3 * h * e, d)).reshape(h, 3, e, d)
        sd[out + "attn.W_QKV"] = w_qkv.permute(3, 1, 0, 2).reshape(d, 3 * h * e).contiguous()
        b_qkv = r.optional(p + "attention.query_key_value.bias", (3 * h * e,))
        sd[out + "attn.b_QKV"] = zeros(3 * h * e) if b_qkv is None else b_qkv.reshape(h, 3, e).permute(1, 0, 2).reshape(-1)
        sd[out + "attn.W_O"] = r.get(p + "attention.dense.weight", (d, h * e)).T.contiguous().reshape(h, e, d)
        b_o = r.optional(p + "attention.dense.bias", (d,))
        sd[out + "attn.b_O"] = zeros(d) if b_o is None else b_o
        sd[out + "mlp.W_in"] = r.get(p + "mlp.dense_h_to_4h.weight", (m, d)).T.contiguous()
        sd[out + "mlp.b_in"] = r.get(p + "mlp.dense_h_to_4h.bias", (m,))
        sd[out + "mlp.W_out"] = r.get(p + "mlp.dense_4h_to_h.weight", (d, m)).T.contiguous()
        sd[out + "mlp.b_out"] = r.get(p + "mlp.dense_4h_to_h.bias", (d,))
    sd["ln_final.w"], sd["ln_final.b"] = r.get("final_layer_norm.weight", (d,)), r.get("final_layer_norm.bias", (d,))
    # Pythia checkpoints call the unembedding embed_out; transformers 5 saves it as lm_head.
    head = r.optional("embed_out.weight", (V, d))
    head = r.optional("lm_head.weight", (V, d)) if head is None else head
    sd["unembed.weight"] = head if head is not None else sd["embed.W_E"]
    sd["unembed.b_U"] = zeros(V)
    return sd
