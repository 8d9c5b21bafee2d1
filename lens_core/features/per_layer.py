"""Any feature dictionary seen layer by layer: which layers have features, how many, and how to read them.

A ``TranscoderSet`` (per-layer, skip transcoders, SAEs) has one dictionary per layer; a
``CrossLayerTranscoder`` has one encoder per layer (its decoders write every later layer, see
``clt_edits``). The Features experiments read both through these few functions.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .clt import CrossLayerTranscoder
from .clt_edits import check_clt_clamp
from .transcoder import FeaturesUnavailable


def dictionary_layers(dictionary: Any) -> list[int]:
    """The layers that have features."""
    if isinstance(dictionary, CrossLayerTranscoder):
        return list(range(dictionary.n_layers))
    return list(dictionary.layers)


def check_layer(dictionary: Any, layer: int) -> None:
    """A clear FeaturesUnavailable for a layer without features."""
    if isinstance(dictionary, CrossLayerTranscoder):
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < dictionary.n_layers:
            raise FeaturesUnavailable(f"layer {layer!r} is out of range: the cross-layer transcoder has layers "
                                      f"0..{dictionary.n_layers - 1}")
    else:
        dictionary[layer]


def layer_width(dictionary: Any, layer: int) -> int:
    """How many features ``layer`` has."""
    check_layer(dictionary, layer)
    if isinstance(dictionary, CrossLayerTranscoder):
        return int(dictionary.d_sae)
    return int(dictionary[layer].cfg.d_sae)


def check_layer_feature(dictionary: Any, layer: int, feature: int) -> int:
    """The feature index itself, or a clear FeaturesUnavailable (unknown layer, index out of range)."""
    if not isinstance(dictionary, CrossLayerTranscoder):
        return dictionary[layer].check_feature(feature)
    check_layer(dictionary, layer)
    if not isinstance(feature, int) or isinstance(feature, bool):
        raise FeaturesUnavailable(f"feature {feature!r} is not a feature index")
    check_clt_clamp(dictionary, layer, feature)
    return feature


def layer_encoder(dictionary: Any, layer: int) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """(hook point the layer's features read, input [..., d_in] -> activations [..., d_sae])."""
    check_layer(dictionary, layer)
    if isinstance(dictionary, CrossLayerTranscoder):
        clt = dictionary

        def encode(x: torch.Tensor) -> torch.Tensor:
            return clt.encode_layer(x.to(clt.W_enc[layer].dtype), layer)

        return clt.hook_in(layer), encode
    tc = dictionary[layer]
    return tc.cfg.hook_in, tc.encode
