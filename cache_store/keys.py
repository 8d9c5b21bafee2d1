"""Cache keys built from content, never from object identity.

A key is the sha256 of canonical JSON (sorted keys, no whitespace) of::

    {"format": FORMAT_VERSION, "kind": "result" | "activations",
     "model": model_fingerprint(model), "tokens": token_ids_part(tokens),
     "experiment": name, "params": canonical(params)}

``canonical`` turns a parameter value into plain JSON without losing anything
that could change a result: floats are written with ``repr`` (so ``1.0`` and
``1`` differ, and ``0.1`` is exact), tensors by dtype, shape and a hash of their
bytes, dataclasses by class name and fields, slices by start/stop/step. A type
it does not know raises ``TypeError`` instead of being guessed at, because a
guessed key can serve the wrong result.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import weakref
from pathlib import PurePath
from typing import Any

import torch

# Bump when the stored layout or the meaning of a key changes: old entries
# then simply stop matching (and age out through eviction).
FORMAT_VERSION = 1

_WEIGHTS_HASHES: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 over a tensor's raw bytes (row-major, on CPU)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def _tensor_part(tensor: torch.Tensor) -> dict[str, Any]:
    return {"__tensor__": {"dtype": str(tensor.dtype), "shape": list(tensor.shape), "sha256": tensor_digest(tensor)}}


def canonical(value: Any) -> Any:
    """Map a parameter value to JSON-able data that identifies it exactly."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return {"__enum__": f"{type(value).__qualname__}.{value.name}"}
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return {"__float__": repr(float(value))}
    if isinstance(value, torch.Tensor):
        return _tensor_part(value)
    if isinstance(value, (torch.dtype, torch.device, PurePath)):
        return {"__" + type(value).__name__ + "__": str(value)}
    if isinstance(value, slice):
        return {"__slice__": [canonical(value.start), canonical(value.stop), canonical(value.step)]}
    if isinstance(value, range):
        return {"__range__": [value.start, value.stop, value.step]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Shallow walk (same content as dataclasses.asdict, without deep-copying tensors).
        fields = {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__dataclass__": type(value).__qualname__, "fields": fields}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [canonical(v) for v in value]
        return {"__set__": sorted(items, key=canonical_json)}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: canonical(v) for k, v in value.items()}
        # Non-string keys would collide with their string form in JSON: keep them typed.
        pairs = [[canonical(k), canonical(v)] for k, v in value.items()]
        return {"__dict__": sorted(pairs, key=lambda kv: canonical_json(kv[0]))}
    if type(value).__module__ == "numpy" and hasattr(value, "dtype"):
        return _tensor_part(torch.as_tensor(value))
    raise TypeError(f"cannot build a cache key from a {type(value).__name__!r} parameter")


def canonical_json(data: Any) -> str:
    """Sorted-key, whitespace-free JSON of already-canonical data."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def token_ids_part(tokens: Any) -> dict[str, Any]:
    """Identify token ids by shape and content; lists and tensors of any int dtype agree."""
    ids = torch.as_tensor(tokens, dtype=torch.long).cpu()
    return {"shape": list(ids.shape), "sha256": tensor_digest(ids)}


def weights_hash(model: Any) -> str:
    """``model.weights_hash()`` if it has one, else sha256 of its state dict (memoised per model)."""
    own = getattr(model, "weights_hash", None)
    if callable(own):
        return str(own())
    try:
        return _WEIGHTS_HASHES[model]
    except (KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(canonical_json(_tensor_part(tensor)).encode())
    value = digest.hexdigest()
    try:
        _WEIGHTS_HASHES[model] = value
    except TypeError:  # not weak-referenceable: recomputed next time
        pass
    return value


def model_fingerprint(model: Any) -> dict[str, Any]:
    """What makes two models give the same results: name, dtype, weight processing, weights."""
    cfg = model.cfg
    return {
        "name": str(cfg.model_name),
        "dtype": str(cfg.dtype),
        "processing": canonical(dict(getattr(model, "processing", None) or {})),
        "weights": weights_hash(model),
    }


def make_key(kind: str, fingerprint: dict[str, Any], tokens: Any, experiment: str, params: Any) -> str:
    """The hex sha256 key of one cache entry."""
    parts = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "model": fingerprint,
        "tokens": token_ids_part(tokens),
        "experiment": experiment,
        "params": canonical(params),
    }
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()
