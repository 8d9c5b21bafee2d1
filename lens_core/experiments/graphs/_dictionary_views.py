"""Skip and cross-layer transcoders as the general walk (``_clt_walk``) sees them, checked against the model.

Every dictionary is, layer by layer: an encoder reading ``hook_in(s)`` (``pre = (x - b_in) @ W_enc + b_enc``),
decoders from layer ``s`` into layers ``s .. s + R - 1`` (``W_dec [F, R, d]``: ``R = 1`` for a per-layer
transcoder, ``n_layers - s`` for a cross-layer one), ``b_dec[t]`` at ``hook_mlp_out`` of layer ``t``, and an
optional linear skip term ``x_t @ W_skip[t]`` from layer ``t``'s input to its output.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from lens_core.features import CrossLayerTranscoder, FeaturesUnavailable, SkipTranscoder
from lens_core.features.transcoder import sparsify

from ._transcoder_views import (DictionaryLayer, _config, check_hooks, float32_activations, layer_items,
                                missing_layers_error, to_graph)


@dataclasses.dataclass
class LayerDictionary(DictionaryLayer):
    """``DictionaryLayer`` with ``W_dec [F, R, d_model]``, the skip term and the activations."""

    W_skip: Optional[torch.Tensor] = None  # [d_model, d_model] or None
    encode: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # float input [pos, d] -> activations [pos, F] (decides activity)


def _clt_float32(clt, s: int, x: torch.Tensor) -> torch.Tensor:
    """Layer ``s``'s activations of the float32 input ``x``, in float32 whatever the CLT's dtype."""
    if clt.W_enc[s].dtype == torch.float32:
        return clt.encode_layer(x, s).float()
    pre = x @ clt.W_enc[s].float() + clt.b_enc[s].float()
    threshold = clt.threshold[s].float() if clt.threshold is not None else None
    return sparsify(pre, clt.activation, clt.k, threshold)


def dictionary_views(model, transcoders) -> list[LayerDictionary]:
    n, device = model.cfg.n_layers, model.W_E.device
    if model.cfg.parallel_attn_mlp:
        raise FeaturesUnavailable("attribution graphs need sequential attention then MLP (this model runs them in parallel)")
    if isinstance(transcoders, CrossLayerTranscoder):
        clt = transcoders
        clt.check_fits(model)
        out = []
        for s in range(n):
            check_hooks(model, s, clt.hook_in(s), clt.hook_out(s), "cross-layer transcoder")
            W_enc = to_graph(clt.W_enc[s], device)
            out.append(LayerDictionary(
                layer=s, hook_in=clt.hook_in(s), W_enc=W_enc, b_enc=to_graph(clt.b_enc[s], device),
                b_in=torch.zeros(W_enc.shape[0], device=device), W_dec=to_graph(clt.W_dec[s], device),
                b_dec=to_graph(clt.b_dec[s], device),
                W_skip=to_graph(clt.W_skip[s], device) if clt.W_skip is not None else None,
                encode=lambda x, s=s: _clt_float32(clt, s, x)))
        return out
    items = layer_items(transcoders)
    views: dict[int, LayerDictionary] = {}
    for tc in items:
        cfg = _config(tc)
        layer = int(cfg.layer)
        check_hooks(model, layer, str(cfg.hook_in), str(cfg.hook_out), "transcoder")
        W_enc = to_graph(tc.W_enc, device)
        b_in = getattr(tc, "b_in", None)
        views[layer] = LayerDictionary(
            layer=layer, hook_in=str(cfg.hook_in), W_enc=W_enc, b_enc=to_graph(tc.b_enc, device),
            b_in=to_graph(b_in, device) if b_in is not None else torch.zeros(W_enc.shape[0], device=device),
            W_dec=to_graph(tc.W_dec, device)[:, None, :], b_dec=to_graph(tc.b_dec, device),
            W_skip=to_graph(tc.W_skip, device) if isinstance(tc, SkipTranscoder) else None,
            encode=None)
        v = views[layer]
        v.encode = lambda x, v=v, tc=tc: float32_activations(tc, x, (x - v.b_in) @ v.W_enc + v.b_enc)
    missing = [l for l in range(n) if l not in views]
    if missing:
        raise missing_layers_error(transcoders, n, missing, list(views))
    return [views[l] for l in range(n)]
