"""Weight processing on a canonical (TransformerLens-named and shaped) state dict.

Each step leaves the model's output distribution unchanged (log-softmax of the
logits) while making the weights easier to read:

- ``fold_ln``: fold each norm's weight (and bias) into the layer that reads it;
  the norm becomes ``LNPre``/``RMSPre`` (no parameters). For LayerNorm the
  reading weights are also centred along d_model, since their input is centred.
- ``center_writing_weights``: remove the mean along d_model from everything that
  writes to the residual stream (every reader is a LayerNorm, which removes it
  anyway). LayerNorm models only.
- ``center_unembed``: remove the mean logit direction (softmax ignores it).
- ``fold_value_biases``: a value bias contributes a constant to the attention
  output (each pattern row sums to 1), so it moves into ``b_O``.
"""

from __future__ import annotations

import torch

from .config import HookedTransformerConfig

Weights = dict[str, torch.Tensor]


def _fold_norm_into(sd: Weights, norm: str, readers: list[tuple[str, str | None]], center: bool) -> None:
    """Fold ``{norm}.w``/``.b`` into each reader (weight name, bias name); weights read d_model on axis -2."""
    w = sd.pop(f"{norm}.w")
    b = sd.pop(f"{norm}.b", None)
    for weight_name, bias_name in readers:
        weight = sd[weight_name]  # [..., d_model, out]
        if b is not None and bias_name is not None:
            sd[bias_name] = sd[bias_name] + torch.einsum("d,...do->...o", b, weight)
        weight = weight * w[:, None]
        if center:
            weight = weight - weight.mean(dim=-2, keepdim=True)
        sd[weight_name] = weight


def fold_layer_norm(sd: Weights, cfg: HookedTransformerConfig) -> None:
    center = cfg.normalization_type == "LN"
    for layer in range(cfg.n_layers):
        attn, mlp = f"blocks.{layer}.attn", f"blocks.{layer}.mlp"
        _fold_norm_into(sd, f"blocks.{layer}.ln1", [(f"{attn}.W_{x}", f"{attn}.b_{x}") for x in "QKV"], center)
        mlp_readers = [(f"{mlp}.W_in", f"{mlp}.b_in")]
        if cfg.gated_mlp:
            mlp_readers.append((f"{mlp}.W_gate", None))
            if f"blocks.{layer}.ln2.b" in sd:
                raise ValueError("cannot fold a LayerNorm bias into a gate without a bias")
        _fold_norm_into(sd, f"blocks.{layer}.ln2", mlp_readers, center)
    _fold_norm_into(sd, "ln_final", [("unembed.W_U", "unembed.b_U")], center)
    cfg.normalization_type = "LNPre" if center else "RMSPre"


def center_writing_weights(sd: Weights, cfg: HookedTransformerConfig) -> None:
    if cfg.normalization_type not in ("LN", "LNPre"):
        raise ValueError("center_writing_weights needs LayerNorm: RMSNorm does not remove the mean")
    sd["embed.W_E"] = sd["embed.W_E"] - sd["embed.W_E"].mean(-1, keepdim=True)
    if "pos_embed.W_pos" in sd:
        sd["pos_embed.W_pos"] = sd["pos_embed.W_pos"] - sd["pos_embed.W_pos"].mean(-1, keepdim=True)
    for layer in range(cfg.n_layers):
        for name in (f"blocks.{layer}.attn.W_O", f"blocks.{layer}.attn.b_O", f"blocks.{layer}.mlp.W_out", f"blocks.{layer}.mlp.b_out"):
            sd[name] = sd[name] - sd[name].mean(-1, keepdim=True)


def center_unembed(sd: Weights, cfg: HookedTransformerConfig) -> None:
    sd["unembed.W_U"] = sd["unembed.W_U"] - sd["unembed.W_U"].mean(-1, keepdim=True)
    sd["unembed.b_U"] = sd["unembed.b_U"] - sd["unembed.b_U"].mean()


def fold_value_biases(sd: Weights, cfg: HookedTransformerConfig) -> None:
    for layer in range(cfg.n_layers):
        attn = f"blocks.{layer}.attn"
        b_V = sd[f"{attn}.b_V"].repeat_interleave(cfg.n_kv_groups, dim=0)  # [head, d_head]
        sd[f"{attn}.b_O"] = sd[f"{attn}.b_O"] + torch.einsum("he,hed->d", b_V, sd[f"{attn}.W_O"])
        sd[f"{attn}.b_V"] = torch.zeros_like(sd[f"{attn}.b_V"])


def process_weights(
    sd: Weights,
    cfg: HookedTransformerConfig,
    fold_ln: bool = True,
    center_writing_weights_: bool = True,
    center_unembed_: bool = True,
    fold_value_biases_: bool = True,
) -> dict[str, bool]:
    """Apply the chosen steps in place (float32); returns what was applied, for fingerprints and display."""
    is_layernorm = cfg.normalization_type in ("LN", "LNPre")
    applied = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False}
    if fold_ln and cfg.normalization_type in ("LN", "RMS"):
        fold_layer_norm(sd, cfg)
        applied["fold_ln"] = True
    if center_writing_weights_ and is_layernorm:
        # RMSNorm keeps the mean, so centring would change the model: skipped (as TransformerLens does).
        center_writing_weights(sd, cfg)
        applied["center_writing_weights"] = True
    if center_unembed_:
        center_unembed(sd, cfg)
        applied["center_unembed"] = True
    if fold_value_biases_:
        fold_value_biases(sd, cfg)
        applied["fold_value_biases"] = True
    return applied
