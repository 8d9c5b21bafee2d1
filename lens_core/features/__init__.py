"""Sparse features: transcoders and SAEs (load, encode, splice, steer) and their dashboards."""

from .saelens import load_saelens, save_saelens
from .splice import feature_activations, run_spliced, splice_hooks, steer
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
           "feature_activations", "load_saelens", "load_transcoders", "mlp_in_hook", "mlp_out_hook", "run_spliced",
           "save_saelens", "save_transcoders", "splice_hooks", "steer"]
