"""Transcoders with random weights for graph tests on tiny models (the real ones are trained by training/)."""

from __future__ import annotations

import torch

from lens_core.features import Transcoder, TranscoderConfig, TranscoderSet, mlp_in_hook, mlp_out_hook


def random_transcoders(model, d_sae: int = 48, k: int = 6, seed: int = 0, activation: str = "topk",
                       always_on: bool = True) -> TranscoderSet:
    """One transcoder per layer; encoder biases shifted up so that many features are active, and feature 0
    active everywhere (a clamp target that always exists)."""
    gen = torch.Generator().manual_seed(seed)
    d = model.cfg.d_model
    out = {}
    for layer in range(model.cfg.n_layers):
        cfg = TranscoderConfig(d_in=d, d_sae=d_sae, d_out=d, layer=layer, hook_in=mlp_in_hook(layer),
                               hook_out=mlp_out_hook(layer), activation=activation, k=k if activation == "topk" else None,
                               threshold=0.1)
        tc = Transcoder(cfg)
        with torch.no_grad():
            tc.W_enc.copy_(torch.randn(d, d_sae, generator=gen) / d**0.5)
            tc.b_enc.copy_(0.5 + 0.1 * torch.randn(d_sae, generator=gen))
            if always_on:
                tc.b_enc[0] = 20.0
            tc.W_dec.copy_(0.3 * torch.randn(d_sae, d, generator=gen))
            tc.b_dec.copy_(0.1 * torch.randn(d, generator=gen))
            tc.b_in.copy_(0.1 * torch.randn(d, generator=gen))
        out[layer] = tc
    return TranscoderSet(out)
