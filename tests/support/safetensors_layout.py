"""Safetensors files written by hand, so a test controls where each tensor lies in the file."""

from __future__ import annotations

import json
import struct

import torch
from safetensors.torch import load_file

CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
         torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def write_safetensors(path, tensors: dict, codes: dict, header_to: int) -> None:
    """Tensors in the given order, the data section starting at a multiple of ``header_to`` bytes."""
    header, offset, blobs = {}, 0, []
    for name, tensor in tensors.items():
        blob = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": codes[name], "shape": list(tensor.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-(8 + len(raw)) % header_to)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def rewrite_aligned(path, header_to: int = 64) -> None:
    """The same tensors (file order), the data section moved to a ``header_to``-byte boundary; every size must be
    a multiple of it, so every tensor starts on one."""
    tensors = load_file(path)
    sizes = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    assert all(size % header_to == 0 for size in sizes.values()), sizes
    write_safetensors(path, tensors, {name: CODES[t.dtype] for name, t in tensors.items()}, header_to)
