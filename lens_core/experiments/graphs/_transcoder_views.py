"""The parts of each layer's transcoder that the attribution graph needs, checked against the model."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from lens_core.features import CrossLayerTranscoder, FeaturesUnavailable, SkipTranscoder


@dataclasses.dataclass
class DictionaryLayer:
    """One layer's encoder and decoder as the graph reads them, float32, on the model's device: ``pre = (x - b_in)
    @ W_enc + b_enc`` of the input read at ``hook_in``; the decoders and ``b_dec`` write ``hook_mlp_out``."""

    layer: int
    hook_in: str
    W_enc: torch.Tensor  # [d_model, F]
    b_enc: torch.Tensor  # [F]
    b_in: torch.Tensor  # [d_model] (zeros when the dictionary has none)
    W_dec: torch.Tensor  # TranscoderView: [F, d_model]; LayerDictionary: [F, R, d_model] into layers layer .. + R - 1
    b_dec: torch.Tensor  # [d_model], written at this layer's hook_mlp_out


@dataclasses.dataclass
class TranscoderView(DictionaryLayer):
    """The parts of one layer's (per-layer, skip-free) transcoder the graph needs."""

    module: object = None  # the transcoder itself: its encode() decides which features are active


def _config(tc) -> object:
    for name in ("cfg", "config"):
        if hasattr(tc, name):
            return getattr(tc, name)
    raise TypeError(f"{type(tc).__name__} has no cfg/config with layer and hook names")


def layer_items(transcoders) -> list:
    """The per-layer modules of a mapping layer -> transcoder, a TranscoderSet or a sequence, or a lone transcoder
    (one Gemma Scope or SAELens file: its own layer only)."""
    if hasattr(transcoders, "cfg") or hasattr(transcoders, "config"):
        return [transcoders]
    return list(transcoders.values()) if hasattr(transcoders, "values") else list(transcoders)


def to_graph(x: torch.Tensor, device) -> torch.Tensor:
    """A dictionary's tensor as the graph reads it: detached, float32, on the model's device."""
    return x.detach().to(device=device, dtype=torch.float32)


def missing_layers_error(transcoders, n_layers: int, missing: list, have: list) -> FeaturesUnavailable:
    """A user-facing refusal (naming the dictionary's source) for a dictionary that lacks layers of the model."""
    source = getattr(transcoders, "source", "") or ""
    return FeaturesUnavailable(f"{source + ': ' if source else ''}the attribution graph replaces every MLP, so it needs a "
                               f"transcoder for each of the model's {n_layers} layers; this dictionary has none for "
                               f"layer(s) {missing} (it has layer(s) {sorted(have)})")


def float32_activations(module, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """The transcoder's activations of the float32 input ``x``: its own ``encode`` for a float32 transcoder, its
    nonlinearity on the float32 pre-activations ``pre`` otherwise (a float16/bfloat16 dictionary's graph is
    computed in float32 from the half-precision forward pass's activations)."""
    if module.W_enc.dtype == torch.float32:
        return module.encode(x).float()
    if hasattr(module, "activate"):
        return module.activate(pre).float()
    return module.encode(x.to(module.W_enc.dtype)).float()


def check_hooks(model, layer: int, hook_in: str, hook_out: str, what: str = "transcoder") -> None:
    """The graph's dictionaries read ln2.hook_normalized or hook_resid_mid and write hook_mlp_out of their layer."""
    if hook_out != f"blocks.{layer}.hook_mlp_out":
        raise FeaturesUnavailable(f"{what} for layer {layer} writes {hook_out!r}; the graph needs blocks.{layer}.hook_mlp_out")
    if hook_in not in (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_resid_mid"):
        raise FeaturesUnavailable(f"{what} for layer {layer} reads {hook_in!r}; the graph supports ln2.hook_normalized or hook_resid_mid")
    if hook_in not in model.hook_dict:
        raise FeaturesUnavailable(f"{what} for layer {layer} reads {hook_in!r}, which this model does not have "
                         "(no norm before its MLP): use hook_resid_mid")


def transcoder_views(model, transcoders) -> Optional[list[TranscoderView]]:
    """One view per layer, in layer order, from a mapping layer -> transcoder or a sequence; None for a
    cross-layer transcoder or a set with skip transcoders (``_clt_walk`` builds those graphs)."""
    if isinstance(transcoders, CrossLayerTranscoder):
        return None  # the general walk (_clt_walk)
    items = layer_items(transcoders)
    if any(isinstance(tc, SkipTranscoder) for tc in items):
        return None
    n = model.cfg.n_layers
    views: dict[int, TranscoderView] = {}
    for tc in items:
        cfg = _config(tc)
        layer = int(cfg.layer)
        hook_in, hook_out = str(cfg.hook_in), str(cfg.hook_out)
        check_hooks(model, layer, hook_in, hook_out)
        device = model.W_E.device

        b_in = getattr(tc, "b_in", None)
        W_enc = to_graph(tc.W_enc, device)
        views[layer] = TranscoderView(
            layer=layer, hook_in=hook_in, W_enc=W_enc, b_enc=to_graph(tc.b_enc, device),
            W_dec=to_graph(tc.W_dec, device), b_dec=to_graph(tc.b_dec, device),
            b_in=to_graph(b_in, device) if b_in is not None else torch.zeros(W_enc.shape[0], device=device), module=tc,
        )
    missing = [l for l in range(n) if l not in views]
    if missing:
        raise missing_layers_error(transcoders, n, missing, list(views))
    if model.cfg.parallel_attn_mlp:
        raise FeaturesUnavailable("attribution graphs need sequential attention then MLP (this model runs them in parallel)")
    return [views[l] for l in range(n)]
