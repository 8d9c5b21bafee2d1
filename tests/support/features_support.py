"""Random transcoders and SAEs for the feature tests (no training, no files unless asked)."""

from __future__ import annotations

import functools

import torch

from lens_core import HookedTransformer
from lens_core.features import Transcoder, TranscoderConfig, TranscoderSet, mlp_in_hook, mlp_out_hook


@functools.lru_cache(maxsize=None)
def default_model() -> HookedTransformer:
    return HookedTransformer.from_pretrained("default")


def random_transcoder(layer: int, d_in: int = 128, d_sae: int = 256, d_out: int = 128, activation: str = "topk",
                      k: int = 8, seed: int = 0, hook_in: str = None, hook_out: str = None) -> Transcoder:
    cfg = TranscoderConfig(d_in=d_in, d_sae=d_sae, d_out=d_out, layer=layer, hook_in=hook_in or mlp_in_hook(layer),
                           hook_out=hook_out or mlp_out_hook(layer), activation=activation,
                           k=k if activation == "topk" else None)
    tc = Transcoder(cfg)
    g = torch.Generator().manual_seed(seed * 101 + layer)
    with torch.no_grad():
        tc.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        tc.b_enc.copy_(0.1 * torch.randn(d_sae, generator=g))
        w = torch.randn(d_sae, d_out, generator=g)
        tc.W_dec.copy_(0.3 * w / w.norm(dim=1, keepdim=True))
        tc.b_dec.copy_(0.1 * torch.randn(d_out, generator=g))
        tc.threshold.copy_(0.2 + 0.1 * torch.rand(d_sae, generator=g))
    return tc


def random_set(model: HookedTransformer, seed: int = 0, **kwargs) -> TranscoderSet:
    return TranscoderSet({l: random_transcoder(l, d_in=model.cfg.d_model, d_out=model.cfg.d_model, seed=seed, **kwargs)
                          for l in range(model.cfg.n_layers)}, model_name=model.cfg.model_name,
                         processing=model.processing)
