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


def random_skip_transcoders(model, skip_layers=None, scale: float = 0.2, seed: int = 1, **kwargs) -> TranscoderSet:
    """``random_transcoders`` with a random skip term ``x @ W_skip`` on ``skip_layers`` (default: all)."""
    from lens_core.features import SkipTranscoder

    base = random_transcoders(model, seed=seed, **kwargs)
    gen = torch.Generator().manual_seed(seed + 100)
    d = model.cfg.d_model
    out = {}
    for layer in base.layers:
        tc = base[layer]
        if skip_layers is None or layer in skip_layers:
            skip = SkipTranscoder(tc.cfg)
            skip.load_state_dict(tc.state_dict(), strict=False)
            with torch.no_grad():
                skip.W_skip.copy_(scale * torch.randn(d, d, generator=gen) / d**0.5)
            tc = skip
        out[layer] = tc
    return TranscoderSet(out)


def random_clt(model, d_sae: int = 32, seed: int = 2, skip: bool = False, activation: str = "relu",
               hook_in: str = "ln2.hook_normalized"):
    """A random cross-layer transcoder for ``model`` (every layer reads ``hook_in``, writes every later
    ``hook_mlp_out``); encoder biases shifted up so that many features are active."""
    from lens_core.features import CrossLayerTranscoder

    gen = torch.Generator().manual_seed(seed)
    n, d = model.cfg.n_layers, model.cfg.d_model
    W_enc = [torch.randn(d, d_sae, generator=gen) / d**0.5 for _ in range(n)]
    b_enc = [0.3 + 0.2 * torch.randn(d_sae, generator=gen) for _ in range(n)]
    W_dec = [0.2 * torch.randn(d_sae, n - s, d, generator=gen) for s in range(n)]
    b_dec = 0.1 * torch.randn(n, d, generator=gen)
    W_skip = [0.2 * torch.randn(d, d, generator=gen) / d**0.5 for _ in range(n)] if skip else None
    return CrossLayerTranscoder(W_enc, b_enc, W_dec, b_dec, hook_in=hook_in, activation=activation, W_skip=W_skip,
                                source="random CLT")
