"""Weight processing on our model's state dict (the layout of ``lens_core.components``).

Each step leaves the model's output distribution (log-softmax of the logits)
unchanged while making the weights easier to read, as in TransformerLens:

- ``fold_ln``: fold each norm's weight (and bias) into the layer that reads it;
  the norm becomes ``LNPre``/``RMSPre`` (no parameters). For LayerNorm the
  reading weights are also centred along d_model, since their input is centred.
- ``center_writing_weights``: remove the mean along d_model from everything that
  writes to the residual stream (every reader is a LayerNorm, which removes it
  anyway). LayerNorm models only.
- ``center_unembed``: remove the mean logit direction (softmax ignores it).
- ``fold_value_biases``: a value bias adds a constant to the attention output
  (each pattern row sums to 1), so it moves into ``b_O``.

Readers are stored [d_model, out] (``W_QKV``, ``W_in``, ``W_gate``) except the
unembedding, stored [d_vocab, d_model]. Each step reads a weight as few times as
it can, because this runs over every weight at load time.

Memory: with ``inplace=False`` (the default) the given tensors are never written:
they may be the caller's, memory-mapped from a checkpoint (a write would copy each
page) or shared. Each step then reads its source and writes its result into a new
buffer from ``new`` (``torch.empty``): for a memory-mapped source, each weight goes
from the page cache to its final buffer in the one pass that processes it, and a
result already new is changed in place by the next step. With ``inplace=True``
(tensors the caller owns) each large weight is changed where it lies; ``inplace``
may also be a test saying which tensors are the caller's (the loader: those not
viewing a file). A tensor that shares memory with another entry (tied embeddings)
is never written: its processed value is a new tensor. The embeddings are processed
first: they are the largest weights, and a mapped source is in memory next to its
result, best while few other results are.
"""

from __future__ import annotations

from typing import Callable, Union

import torch

from .config import HookedTransformerConfig

Weights = dict[str, torch.Tensor]
New = Callable[[torch.Size], torch.Tensor]  # an uninitialised float32 tensor of that shape
InPlace = Union[bool, Callable[[torch.Tensor], bool]]  # all, none, or which tensors are the caller's to overwrite


def _writable(sd: Weights, name: str, inplace: InPlace) -> bool:
    """May ``sd[name]`` be changed in place: ``inplace`` allows it and no other entry shares its memory."""
    if not (inplace(sd[name]) if callable(inplace) else inplace):
        return False
    storage = sd[name].untyped_storage().data_ptr()
    return sum(1 for t in sd.values() if t.untyped_storage().data_ptr() == storage) == 1


def _target(sd: Weights, name: str, inplace: InPlace, new: New) -> torch.Tensor:
    """Where the processed ``sd[name]`` is written: in place if allowed (:func:`_writable`), else a new buffer."""
    return sd[name] if _writable(sd, name, inplace) else new(sd[name].shape)


def _scale_rows(weight: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``weight * scale (+ shift)`` (broadcast), written into ``out`` (``weight`` itself or a new buffer): one pass."""
    if shift is None:
        return torch.mul(weight, scale, out=out)
    return torch.addcmul(shift, weight, scale, out=out)


def _fold_into_columns(sd: Weights, weight_name: str, bias_name: str | None, w: torch.Tensor,
                       b: torch.Tensor | None, center: bool, inplace: InPlace, new: New) -> None:
    """Fold a norm into a reader stored [d_model, out]; the column means come from a product,
    not a second pass (the mean of ``W * w`` over d_model is ``w @ W / d_model``)."""
    weight = sd[weight_name]
    # Matrix-vector products: a [2, d] @ [d, out] matrix product is many times slower on CPU.
    if b is not None and bias_name is not None:
        sd[bias_name] = sd[bias_name] + torch.mv(weight.T, b)
    shift = -(torch.mv(weight.T, w) / weight.shape[0])[None, :] if center else None
    sd[weight_name] = _scale_rows(weight, shift, w[:, None], _target(sd, weight_name, inplace, new))


def _fold_block_norms(sd: Weights, cfg: HookedTransformerConfig, center: bool, inplace: InPlace, new: New) -> None:
    # Only pre-sublayer norms fold: a post-sublayer norm (ln1_post, ln2_post) and the q/k norms keep their
    # weights (processing_notes says so).
    for layer in range(cfg.n_layers if cfg.sublayer_norms != "post" else 0):
        attn, mlp = f"blocks.{layer}.attn", f"blocks.{layer}.mlp"
        w, b = sd.pop(f"blocks.{layer}.ln1.w"), sd.pop(f"blocks.{layer}.ln1.b", None)
        _fold_into_columns(sd, f"{attn}.W_QKV", f"{attn}.b_QKV", w, b, center, inplace, new)
        w, b = sd.pop(f"blocks.{layer}.ln2.w"), sd.pop(f"blocks.{layer}.ln2.b", None)
        _fold_into_columns(sd, f"{mlp}.W_in", f"{mlp}.b_in", w, b, center, inplace, new)
        if cfg.gated_mlp:
            if b is not None:
                raise ValueError("cannot fold a LayerNorm bias into a gate that has no bias")
            _fold_into_columns(sd, f"{mlp}.W_gate", None, w, None, center, inplace, new)


def _fold_final_norm(sd: Weights, center: bool, inplace: InPlace, new: New) -> None:
    w, b = sd.pop("ln_final.w"), sd.pop("ln_final.b", None)
    unembed = sd["unembed.weight"]  # [d_vocab, d_model]: the same fold as a block's, transposed
    if b is not None:
        sd["unembed.b_U"] = sd["unembed.b_U"] + torch.mv(unembed, b)
    shift = -(torch.mv(unembed, w) / unembed.shape[1])[:, None] if center else None
    sd["unembed.weight"] = _scale_rows(unembed, shift, w[None, :], _target(sd, "unembed.weight", inplace, new))


def _center_last(sd: Weights, name: str, inplace: InPlace, new: New) -> None:
    tensor = sd[name]
    mean = tensor.mean(-1, keepdim=True)
    sd[name] = torch.sub(tensor, mean, out=_target(sd, name, inplace, new))


def _center_embeddings(sd: Weights, inplace: InPlace, new: New) -> None:
    for name in ("embed.W_E", "pos_embed.W_pos"):
        if name in sd:
            _center_last(sd, name, inplace, new)


def _center_block_writers(sd: Weights, cfg: HookedTransformerConfig, inplace: InPlace, new: New) -> None:
    for layer in range(cfg.n_layers):
        for name in ("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out"):
            _center_last(sd, f"blocks.{layer}.{name}", inplace, new)


def _center_unembed(sd: Weights, inplace: InPlace, new: New) -> None:
    unembed = sd["unembed.weight"]
    mean = unembed.mean(dim=0, keepdim=True)
    sd["unembed.weight"] = torch.sub(unembed, mean, out=_target(sd, "unembed.weight", inplace, new))
    sd["unembed.b_U"] = sd["unembed.b_U"] - sd["unembed.b_U"].mean()


def _fold_value_biases(sd: Weights, cfg: HookedTransformerConfig) -> None:
    h, kv, e = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head
    for layer in range(cfg.n_layers):
        attn = f"blocks.{layer}.attn"
        b_qkv = sd[f"{attn}.b_QKV"].clone()
        b_v = b_qkv[(h + kv) * e :].view(kv, e).repeat_interleave(cfg.n_kv_groups, dim=0)  # [head, d_head]
        sd[f"{attn}.b_O"] = sd[f"{attn}.b_O"] + b_v.reshape(-1) @ sd[f"{attn}.W_O"].reshape(h * e, -1)
        b_qkv[(h + kv) * e :] = 0
        sd[f"{attn}.b_QKV"] = b_qkv


def fold_config(cfg: HookedTransformerConfig, applied: dict[str, bool]) -> None:
    """The config change that goes with the weights ``applied`` describes: folded norms have no parameters."""
    if applied.get("fold_ln") and cfg.normalization_type in ("LN", "RMS"):
        cfg.normalization_type = "LNPre" if cfg.normalization_type == "LN" else "RMSPre"


def processing_notes(cfg: HookedTransformerConfig, fold_ln: bool = True, center_writing_weights: bool = True,
                     center_unembed: bool = True) -> dict[str, str]:
    """What the chosen steps cannot do on this architecture, and why: ``{step: reason}``.
    The loader stores it as ``model.processing_skipped``, for the app to show."""
    notes: dict[str, str] = {}
    if fold_ln and cfg.normalization_type in ("LN", "RMS"):
        if cfg.sublayer_norms != "pre":
            notes["fold_ln.post_norms"] = (
                "the norms after each sublayer (ln1_post, ln2_post) keep their weights: they scale the sublayer's "
                "normalized output, which no later weight reads linearly" + (
                    "; this model has no pre-sublayer norms, so only ln_final is folded" if cfg.sublayer_norms == "post" else ""))
        if cfg.qk_norm is not None:
            notes["fold_ln.qk_norms"] = ("the query/key norms (attn.q_norm, attn.k_norm) keep their weights: "
                                         "rotary rotates after them, so their weights cannot move into W_Q/W_K")
    if center_writing_weights:
        if cfg.normalization_type not in ("LN", "LNPre"):
            notes["center_writing_weights"] = "skipped: RMSNorm does not remove the mean, so centring would change the model"
        elif cfg.sublayer_norms != "pre":
            notes["center_writing_weights"] = "skipped: sublayer outputs go through a post-norm before the residual"
    if center_unembed and cfg.output_logits_soft_cap > 0:
        notes["center_unembed"] = ("skipped: final-logit soft-capping (tanh) is applied after the unembedding, so "
                                   "shifting every logit by the same amount would change the probabilities")
    return notes


def process_weights(
    sd: Weights,
    cfg: HookedTransformerConfig,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
    inplace: InPlace = False,
    new: New = torch.empty,
) -> dict[str, bool]:
    """Apply the chosen steps (float32); returns what was applied, for fingerprints and display.

    ``inplace``: the tensors of ``sd`` belong to the caller's load alone and may be overwritten
    (see the module docstring), or a test saying which do; ``sd`` itself is updated either way. ``new``: where results that are
    not written in place go.
    """
    is_layernorm = cfg.normalization_type in ("LN", "LNPre") and cfg.sublayer_norms == "pre"
    applied = {"fold_ln": fold_ln and cfg.normalization_type in ("LN", "RMS"),
               # RMSNorm keeps the mean, so centring would change the model: skipped (as TransformerLens does).
               "center_writing_weights": center_writing_weights and is_layernorm,
               "center_unembed": center_unembed and cfg.output_logits_soft_cap <= 0, "fold_value_biases": False}
    center = cfg.normalization_type == "LN"
    # The embeddings first (no step reads another's result here, so the order changes no value): they are the
    # largest weights, and a mapped source stays in memory while its results are written, best while little else is.
    if applied["fold_ln"]:
        _fold_final_norm(sd, center, inplace, new)
    if applied["center_writing_weights"]:
        _center_embeddings(sd, inplace, new)
    if applied["center_unembed"]:
        # Folding made a new unembedding: it is ours to change in place.
        _center_unembed(sd, inplace or applied["fold_ln"], new)
    if applied["fold_ln"]:
        _fold_block_norms(sd, cfg, center, inplace, new)
        fold_config(cfg, applied)
    if applied["center_writing_weights"]:
        _center_block_writers(sd, cfg, inplace, new)
    if fold_value_biases:
        _fold_value_biases(sd, cfg)
        applied["fold_value_biases"] = True
    return applied
