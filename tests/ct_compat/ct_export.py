"""Our model and dictionaries in circuit-tracer 0.5.0's classes: the same weights on both sides.

Only the circuit-tracer venv imports this (tests/ct_compat and ``bench.attribution_graph_ct``).

- ``ct_model(ours, tokenizer, dictionary)``: a circuit-tracer ``TransformerLensReplacementModel`` made offline
  from a transformer-lens ``HookedTransformerConfig`` (``ReplacementModel.from_config``) and OUR processed
  weights (folded norms become ``LNPre``, as in our model), with our dictionary mapped by ``ct_dictionary``.
- ``ct_dictionary(ours)``: a lens_core ``TranscoderSet`` (plain or skip transcoders) -> circuit-tracer
  ``TranscoderSet`` of ``SingleLayerTranscoder``; a lens_core ``CrossLayerTranscoder`` -> circuit-tracer's.
  Layouts: circuit-tracer stores ``W_enc`` as [d_sae, d_model] (``F.linear``), a per-layer ``W_skip``
  transposed (``x @ W_skip.T``), a CLT's ``W_skip`` not transposed (``x @ W_skip[l]``) and its JumpReLU
  thresholds as [n_layers, 1, d_sae]; it has no ``b_in``, so ``b_enc - b_in @ W_enc`` goes into ``b_enc``.
- ``ct_graph(model, tokens, targets)``: circuit-tracer's ``attribute`` without a feature budget.

Node order is the same on both sides (features sorted by (layer, pos, feature), one error per (layer, pos)
layer-major, one token per position, the target logits; rows targets, columns sources), so matrices compare
after dropping the features circuit-tracer never has (those at the BOS position, which it zeroes).
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lens_core.features import CrossLayerTranscoder, SkipTranscoder


def tl_config(ours):
    """The transformer-lens 3.x config of a GPT-2-style lens_core model (LNPre when our norms are folded)."""
    from transformer_lens import HookedTransformerConfig

    cfg = ours.cfg
    if cfg.positional_embedding_type != "standard" or cfg.gated_mlp or cfg.n_key_value_heads != cfg.n_heads:
        raise ValueError("ct_export maps GPT-2-style models only (learned positions, plain MLP, no GQA)")
    return HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head, d_mlp=cfg.d_mlp,
        d_vocab=cfg.d_vocab, d_vocab_out=cfg.d_vocab_out, n_ctx=cfg.n_ctx, act_fn=cfg.act_fn, eps=cfg.eps,
        normalization_type=cfg.normalization_type, positional_embedding_type="standard", device="cpu",
        dtype=torch.float32, model_name="ct-compat-tiny", default_prepend_bos=False, seed=0,
    )


def tl_state_dict(ours) -> dict:
    """Our (processed) weights under transformer-lens's names and layouts."""
    out = {"embed.W_E": ours.embed.W_E, "pos_embed.W_pos": ours.pos_embed.W_pos,
           "unembed.W_U": ours.W_U, "unembed.b_U": ours.unembed.b_U}
    for l, block in enumerate(ours.blocks):
        attn = block.attn
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            out[f"blocks.{l}.attn.{name}"] = getattr(attn, name)
        for name in ("W_in", "b_in", "W_out", "b_out"):
            out[f"blocks.{l}.mlp.{name}"] = getattr(block.mlp, name)
        for norm in ("ln1", "ln2"):
            for p in ("w", "b"):
                if getattr(getattr(block, norm), p, None) is not None:
                    out[f"blocks.{l}.{norm}.{p}"] = getattr(getattr(block, norm), p)
    for p in ("w", "b"):
        if getattr(ours.ln_final, p, None) is not None:
            out[f"ln_final.{p}"] = getattr(ours.ln_final, p)
    return {k: v.detach().float().clone() for k, v in out.items()}


def _hook_name(full: str) -> str:
    """``blocks.0.ln2.hook_normalized`` -> ``ln2.hook_normalized`` (circuit-tracer's per-block hook names)."""
    return full.split(".", 2)[2] if full.startswith("blocks.") else full


def ct_dictionary(ours):
    """Our TranscoderSet / CrossLayerTranscoder as circuit-tracer's (float32, CPU, nothing lazy)."""
    if isinstance(ours, CrossLayerTranscoder):
        return _ct_clt(ours)
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
    from circuit_tracer.transcoder.activation_functions import JumpReLU

    layers, hook_in, hook_out = {}, set(), set()
    for tc in ours:
        cfg = tc.cfg
        if cfg.activation == "relu":
            act = torch.nn.functional.relu
        elif cfg.activation == "jumprelu":
            act = JumpReLU(tc.threshold.detach().float().clone())
        else:
            raise ValueError(f"no circuit-tracer activation for {cfg.activation!r} (relu and jumprelu map exactly)")
        skip = isinstance(tc, SkipTranscoder)
        ct = SingleLayerTranscoder(cfg.d_in, cfg.d_sae, act, cfg.layer, skip_connection=skip,
                                   device=torch.device("cpu"), dtype=torch.float32)
        with torch.no_grad():
            ct.W_enc.copy_(tc.W_enc.T)
            ct.b_enc.copy_(tc.b_enc - tc.b_in @ tc.W_enc)
            ct.W_dec.copy_(tc.W_dec)
            ct.b_dec.copy_(tc.b_dec)
            if skip:
                ct.W_skip.copy_(tc.W_skip.T)  # circuit-tracer: x @ W_skip.T; ours: x @ W_skip
        layers[cfg.layer] = ct
        hook_in.add(_hook_name(cfg.hook_in))
        hook_out.add(_hook_name(cfg.hook_out))
    if len(hook_in) != 1 or len(hook_out) != 1:
        raise ValueError(f"circuit-tracer needs one hook pair for every layer, got {hook_in} -> {hook_out}")
    return TranscoderSet(layers, feature_input_hook=hook_in.pop(), feature_output_hook=hook_out.pop())


def _ct_clt(ours: CrossLayerTranscoder):
    from circuit_tracer.transcoder.cross_layer_transcoder import (
        CrossLayerTranscoder as CTCLT,
    )

    if ours.activation not in ("relu", "jumprelu") or ours.d_in != ours.d_out:
        raise ValueError("circuit-tracer CLTs: relu or jumprelu, d_in == d_out")
    ct = CTCLT(ours.n_layers, ours.d_sae, ours.d_in, activation_function="jump_relu" if ours.activation == "jumprelu" else "relu",
               skip_connection=ours.W_skip is not None, lazy_decoder=False, lazy_encoder=False,
               feature_input_hook=ours.hook_in_name, feature_output_hook=ours.hook_out_name,
               device=torch.device("cpu"), dtype=torch.float32)
    with torch.no_grad():
        for s in range(ours.n_layers):
            ct.W_enc[s].copy_(ours.W_enc[s].T)
            ct.b_enc[s].copy_(ours.b_enc[s])
            ct.W_dec[s].copy_(ours.W_dec[s])
            if ours.W_skip is not None:
                ct.W_skip[s].copy_(ours.W_skip[s])  # both x @ W_skip[l]
            if ours.threshold is not None:
                ct.activation_function.threshold[s, 0].copy_(ours.threshold[s])
        ct.b_dec.copy_(ours.b_dec)
    return ct


def ct_model(ours, tokenizer, dictionary):
    """circuit-tracer's replacement model (transformer-lens backend) on our processed weights."""
    from circuit_tracer import ReplacementModel

    ct = ReplacementModel.from_config(tl_config(ours), ct_dictionary(dictionary), backend="transformerlens",
                                      tokenizer=tokenizer)
    weights = tl_state_dict(ours)
    state = ct.state_dict()
    wrapped = {k.replace(".old_mlp.", ".").replace(".old_unembed.", "."): k for k in state}
    unknown = set(weights) - set(wrapped)
    if unknown:
        raise KeyError(f"transformer-lens has no parameters {sorted(unknown)}")
    left = {k for k in wrapped if k not in weights and not k.endswith((".mask", ".IGNORE")) and "transcoders" not in k}
    if left:
        raise KeyError(f"no weights exported for {sorted(left)}")
    for key, value in weights.items():
        state[wrapped[key]] = value
    ct.load_state_dict(state, strict=True)
    return ct.eval()


def ct_graph(ct, tokens: torch.Tensor, targets=None, batch_size: int = 64, max_feature_nodes=None):
    """circuit-tracer's graph of ``tokens [1, pos]`` (they must start with a special token, as ours do)."""
    from circuit_tracer import attribute

    targets = None if targets is None else torch.as_tensor(list(targets), dtype=torch.long)
    return attribute(tokens[0], ct, attribution_targets=targets, batch_size=batch_size,
                     max_feature_nodes=max_feature_nodes)


def bos_free(ours_graph, at: int = 0) -> torch.Tensor:
    """Indices of our graph's nodes that circuit-tracer has too: all but the features at position ``at``."""
    keep = torch.ones(ours_graph.n_nodes, dtype=torch.bool)
    keep[: ours_graph.n_features] = ours_graph.feature_pos != at
    return keep.nonzero()[:, 0]


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """``||ours - theirs|| / ||theirs||`` (Frobenius)."""
    return float((ours.double() - theirs.double()).norm() / theirs.double().norm().clamp_min(1e-30))
