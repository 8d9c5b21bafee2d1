"""Cache values as one bytes blob: header + JSON metadata + safetensors tensors.

Layout (big-endian)::

    magic b"CXRS" | format u16 | flags u16 | meta_len u64 | tensors_len u64 | sha256(payload) 32 bytes
    payload = meta JSON (UTF-8) + safetensors bytes

Decoding checks the magic, the format version, both lengths against the real
size and the checksum, so a truncated, padded or bit-flipped blob raises
:class:`CorruptEntry`. Nothing here unpickles or imports anything named by the
data: JSON is parsed with ``json.loads``, tensors with ``safetensors``, and a
result class is looked up by its ``kind`` string in ``RESULT_TYPES``.

Precision: tensors keep their dtype bit for bit, except that
``encode_activations(..., fp16=True)`` stores float32/float64 activations as
float16 (and casts back to the original dtype on read). A tensor with finite
values beyond float16's range (|x| > 65504) is kept at full precision.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import safetensors.torch
import torch

from lens_core.results import ExperimentResult

from .keys import FORMAT_VERSION

MAGIC = b"CXRS"
_HEADER = struct.Struct(">4sHHQQ32s")
HEADER_SIZE = _HEADER.size
_FP16_MAX = float(torch.finfo(torch.float16).max)
_CASTABLE = {"float32": torch.float32, "float64": torch.float64}


class CorruptEntry(ValueError):
    """A stored blob that cannot be trusted: treat as a cache miss."""


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that own their memory (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
            storage = t.untyped_storage()
        seen.add(storage.data_ptr())
        out[name] = t
    return out


def encode_parts(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    tensor_bytes = safetensors.torch.save(_storable(tensors))
    payload = meta_bytes + tensor_bytes
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(meta_bytes), len(tensor_bytes), hashlib.sha256(payload).digest())
    return header + payload


def decode_parts(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) < HEADER_SIZE:
        raise CorruptEntry("blob missing or shorter than its header")
    view = memoryview(blob)
    magic, version, flags, meta_len, tensor_len, checksum = _HEADER.unpack(view[:HEADER_SIZE])
    if magic != MAGIC:
        raise CorruptEntry("bad magic")
    if version != FORMAT_VERSION:
        raise CorruptEntry(f"format {version}, expected {FORMAT_VERSION}")
    if flags != 0:
        raise CorruptEntry(f"unknown flags {flags:#x}")
    if HEADER_SIZE + meta_len + tensor_len != len(view):
        raise CorruptEntry("length mismatch (truncated or padded)")
    payload = view[HEADER_SIZE:]
    if hashlib.sha256(payload).digest() != checksum:
        raise CorruptEntry("checksum mismatch")
    try:
        meta = json.loads(bytes(payload[:meta_len]).decode("utf-8"))
        tensors = safetensors.torch.load(bytes(payload[meta_len:]))
    except Exception as error:  # checksum matched but content is not ours
        raise CorruptEntry(f"undecodable payload: {error}") from error
    if not isinstance(meta, dict):
        raise CorruptEntry("metadata is not an object")
    return tensors, meta


def encode_result(result: ExperimentResult) -> bytes:
    """Full precision: every tensor keeps its dtype and bits."""
    if not isinstance(result, ExperimentResult):
        raise TypeError(f"expected an ExperimentResult, got {type(result).__name__}")
    tensors, meta = result.to_parts()
    return encode_parts(tensors, {"container": "result", "result": meta})


def decode_result(blob: bytes) -> ExperimentResult:
    tensors, meta = decode_parts(blob)
    if meta.get("container") != "result":
        raise CorruptEntry("not an experiment result")
    try:
        return ExperimentResult.from_parts(tensors, meta["result"])
    except (KeyError, TypeError, ValueError) as error:
        # e.g. the result class gained a field since this entry was written
        raise CorruptEntry(f"stored result does not fit its class: {error}") from error


def _fits_fp16(tensor: torch.Tensor) -> bool:
    finite = tensor[torch.isfinite(tensor)]
    return finite.numel() == 0 or float(finite.abs().max()) <= _FP16_MAX


def encode_activations(activations: dict[str, torch.Tensor], fp16: bool = False) -> bytes:
    """Activations by hook name; with ``fp16`` float32/64 tensors are stored as float16."""
    tensors: dict[str, torch.Tensor] = {}
    cast: dict[str, str] = {}
    for name, tensor in activations.items():
        if fp16 and tensor.dtype in (torch.float32, torch.float64) and _fits_fp16(tensor):
            cast[name] = str(tensor.dtype).removeprefix("torch.")
            tensor = tensor.to(torch.float16)
        tensors[name] = tensor
    meta = {"container": "activations", "names": list(activations), "cast": cast}
    return encode_parts(tensors, meta)


def decode_activations(blob: bytes) -> dict[str, torch.Tensor]:
    tensors, meta = decode_parts(blob)
    names, cast = meta.get("names"), meta.get("cast", {})
    if meta.get("container") != "activations" or not isinstance(names, list) or set(names) != set(tensors):
        raise CorruptEntry("not an activation cache")
    out: dict[str, torch.Tensor] = {}
    for name in names:  # keep the hook order the model produced
        tensor = tensors[name]
        if name in cast:
            dtype = _CASTABLE.get(cast[name])
            if dtype is None:
                raise CorruptEntry(f"unknown dtype {cast[name]!r}")
            tensor = tensor.to(dtype)
        out[name] = tensor
    return out
