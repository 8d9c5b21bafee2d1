"""Sparse features: transcoders and SAEs (load, encode, splice, steer) and their dashboards."""

from .clt import CrossLayerTranscoder
from .dictionaries import dictionary_kind, load_dictionary
from .saelens import load_saelens, save_saelens
from .skip import SkipTranscoder
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

__all__ = ["CrossLayerTranscoder", "FeaturesUnavailable", "SkipTranscoder", "dictionary_kind", "load_dictionary", "Transcoder", "TranscoderConfig", "TranscoderSet", "build_transcoder",
           "feature_activations", "load_saelens", "load_transcoders", "mlp_in_hook", "mlp_out_hook", "run_spliced",
           "save_saelens", "save_transcoders", "splice_hooks", "steer"]
