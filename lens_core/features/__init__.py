"""Sparse features: transcoders and SAEs (load, encode, splice, steer) and their dashboards."""

from .transcoder import (
    FeaturesUnavailable,
    Transcoder,
    TranscoderConfig,
    TranscoderSet,
    build_transcoder,
    load_transcoders,
    mlp_in_hook,
    mlp_out_hook,
    save_transcoders,
)

__all__ = ["FeaturesUnavailable", "Transcoder", "TranscoderConfig", "TranscoderSet", "build_transcoder",
           "load_transcoders", "mlp_in_hook", "mlp_out_hook", "save_transcoders"]
