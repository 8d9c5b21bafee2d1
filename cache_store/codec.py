"""Cache values as one bytes blob: header + JSON metadata + safetensors tensors.

Layout (big-endian)::

    magic b"CXRS" | format u16 | flags u16 | meta_len u64 | tensors_len u64 | sha256(payload) 32 bytes
    payload = meta JSON (UTF-8) + safetensors bytes

Decoding checks the magic, the format version, both lengths against the real
size and the checksum, so a truncated, padded or bit-flipped blob raises
:class:`CorruptEntry`. Nothing here unpickles or imports anything named by the
data: JSON is parsed with ``json.loads``; tensors are written by ``safetensors``
and read back by a small reader of that format that makes zero-copy views into
the blob's buffer (dtype from a fixed table, every offset bounds-checked); a
result class is looked up by its ``kind`` string in ``RESULT_TYPES``.

Precision: tensors keep their dtype bit for bit, except that
``encode_activations(..., fp16=True)`` stores float32/float64 activations as
float16 (and casts back to the original dtype on read). A tensor with finite
values beyond float16's range (|x| > 65504) is kept at full precision.
"""

from __future__ import annotations

import hashlib
import json
import math
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
_SAFETENSORS_DTYPES = {
    name: getattr(torch, attr)
    for name, attr in {
        "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
        "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
        "U16": "uint16", "U32": "uint32", "U64": "uint64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    }.items()
    if hasattr(torch, attr)
}


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
    # Pad (JSON allows trailing spaces) so the tensor section starts 64-byte aligned in the blob.
    meta_bytes += b" " * (-(HEADER_SIZE + len(meta_bytes)) % 64)
    tensor_bytes = safetensors.torch.save(_storable(tensors))
    payload = meta_bytes + tensor_bytes
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(meta_bytes), len(tensor_bytes), hashlib.sha256(payload).digest())
    return header + payload


def decode_parts(blob: bytes | bytearray) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Check and split a blob. Tensors are views into a private copy of ``blob``
    (no copy at all when ``blob`` is a bytearray, which the caller hands over)."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < HEADER_SIZE:
        raise CorruptEntry("blob missing or shorter than its header")
    buffer = blob if isinstance(blob, bytearray) else bytearray(blob)
    view = memoryview(buffer)
    magic, version, flags, meta_len, tensor_len, checksum = _HEADER.unpack(view[:HEADER_SIZE])
    if magic != MAGIC:
        raise CorruptEntry("bad magic")
    if version != FORMAT_VERSION:
        raise CorruptEntry(f"format {version}, expected {FORMAT_VERSION}")
    if flags != 0:
        raise CorruptEntry(f"unknown flags {flags:#x}")
    if HEADER_SIZE + meta_len + tensor_len != len(view):
        raise CorruptEntry("length mismatch (truncated or padded)")
    if hashlib.sha256(view[HEADER_SIZE:]).digest() != checksum:
        raise CorruptEntry("checksum mismatch")
    try:
        meta = json.loads(bytes(view[HEADER_SIZE : HEADER_SIZE + meta_len]).decode("utf-8"))
        tensors = _read_safetensors(buffer, HEADER_SIZE + meta_len)
    except CorruptEntry:
        raise
    except Exception as error:  # checksum matched but content is not ours
        raise CorruptEntry(f"undecodable payload: {error}") from error
    if not isinstance(meta, dict):
        raise CorruptEntry("metadata is not an object")
    return tensors, meta


def _read_safetensors(buffer: bytearray, start: int) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors section as views into ``buffer`` (a plain reader:
    8-byte header length, JSON header of dtype/shape/offsets, raw data)."""
    size = len(buffer) - start
    if size < 8:
        raise CorruptEntry("tensor section too short")
    header_len = int.from_bytes(buffer[start : start + 8], "little")
    if header_len > size - 8:
        raise CorruptEntry("tensor header too long")
    header = json.loads(bytes(buffer[start + 8 : start + 8 + header_len]).decode("utf-8"))
    data_start, data_size = start + 8 + header_len, size - 8 - header_len
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
        shape, (begin, end) = info["shape"], info["data_offsets"]
        if dtype is None or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CorruptEntry(f"tensor {name!r}: bad dtype or shape")
        numel = math.prod(shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not (0 <= begin <= end <= data_size) or end - begin != numel * itemsize:
            raise CorruptEntry(f"tensor {name!r}: bad data offsets")
        offset = data_start + begin
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        elif offset % itemsize:
            # Misaligned for its dtype: copy into its own (aligned) memory.
            tensors[name] = torch.frombuffer(bytearray(buffer[offset : offset + end - begin]), dtype=dtype).reshape(shape)
        else:
            tensors[name] = torch.frombuffer(buffer, dtype=dtype, count=numel, offset=offset).reshape(shape)
    return tensors


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
    except Exception as error:
        # e.g. the result class gained a field, or its validation changed, since this was written
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
