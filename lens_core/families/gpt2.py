"""GPT-2: learned positions, LayerNorm, GELU (tanh), q/k/v fused in one Conv1D (weights stored [in, out])."""

from __future__ import annotations

from ..config import HookedTransformerConfig
from .reader import WeightReader, zeros

PREFIXES = ("transformer.",)


def config_from_hf(hf) -> HookedTransformerConfig:
    if getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("GPT-2 checkpoints with scale_attn_by_inverse_layer_idx are not supported")
    if not getattr(hf, "scale_attn_weights", True):
        raise ValueError("GPT-2 checkpoints without scale_attn_weights are not supported")
    act = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu_fast": "gelu_new", "gelu": "gelu", "relu": "relu"}
    if hf.activation_function not in act:
        raise ValueError(f"unsupported GPT-2 activation {hf.activation_function!r}")
    return HookedTransformerConfig(
        n_layers=hf.n_layer, d_model=hf.n_embd, n_heads=hf.n_head, d_head=hf.n_embd // hf.n_head,
        d_mlp=hf.n_inner or 4 * hf.n_embd, d_vocab=hf.vocab_size, n_ctx=hf.n_positions,
        act_fn=act[hf.activation_function], eps=hf.layer_norm_epsilon, normalization_type="LN",
        positional_embedding_type="standard", original_architecture="GPT2LMHeadModel",
    )


def convert(r: WeightReader, cfg: HookedTransformerConfig) -> dict:
    d, h, e, m, V = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab
    sd = {"embed.W_E": r.get("wte.weight", (V, d)), "pos_embed.W_pos": r.get("wpe.weight", (cfg.n_ctx, d))}
    for l in range(cfg.n_layers):
        p, out = f"h.{l}.", f"blocks.{l}."
        sd[out + "ln1.w"], sd[out + "ln1.b"] = r.get(p + "ln_1.weight", (d,)), r.get(p + "ln_1.bias", (d,))
        # Conv1D keeps [in, out] with q, k, v column blocks, heads in order: already our fused layout.
        sd[out + "attn.W_QKV"] = r.get(p + "attn.c_attn.weight", (d, 3 * d))
        sd[out + "attn.b_QKV"] = r.get(p + "attn.c_attn.bias", (3 * d,))
        sd[out + "attn.W_O"] = r.get(p + "attn.c_proj.weight", (d, d)).reshape(h, e, d)
        sd[out + "attn.b_O"] = r.get(p + "attn.c_proj.bias", (d,))
        sd[out + "ln2.w"], sd[out + "ln2.b"] = r.get(p + "ln_2.weight", (d,)), r.get(p + "ln_2.bias", (d,))
        sd[out + "mlp.W_in"], sd[out + "mlp.b_in"] = r.get(p + "mlp.c_fc.weight", (d, m)), r.get(p + "mlp.c_fc.bias", (m,))
        sd[out + "mlp.W_out"], sd[out + "mlp.b_out"] = r.get(p + "mlp.c_proj.weight", (m, d)), r.get(p + "mlp.c_proj.bias", (d,))
    sd["ln_final.w"], sd["ln_final.b"] = r.get("ln_f.weight", (d,)), r.get("ln_f.bias", (d,))
    head = r.optional("lm_head.weight", (V, d))
    sd["unembed.weight"] = head if head is not None else sd["embed.W_E"]
    sd["unembed.b_U"] = zeros(V)
    return sd
