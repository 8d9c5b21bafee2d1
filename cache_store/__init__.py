"""Disk cache for experiment results and activation caches, keyed by content.

    from cache_store import ResultStore
    store = ResultStore("~/.cache/circuit-explorer", size_limit_bytes=2**30)
    result = store.get_or_compute(model, "logit_lens", tokens, {"layer": 3}, lambda: logit_lens(model, request))

See :mod:`cache_store.store` (API, faults, precision), :mod:`cache_store.keys`
(what a key is made of) and :mod:`cache_store.codec` (the stored bytes).
"""

from .codec import CorruptEntry, decode_activations, decode_result, encode_activations, encode_result
from .keys import FORMAT_VERSION, canonical, make_key, model_fingerprint
from .store import NullStore, ResultStore, StoreStats, default_cache_dir

__all__ = [
    "FORMAT_VERSION",
    "CorruptEntry",
    "NullStore",
    "ResultStore",
    "StoreStats",
    "canonical",
    "decode_activations",
    "decode_result",
    "default_cache_dir",
    "encode_activations",
    "encode_result",
    "make_key",
    "model_fingerprint",
]
