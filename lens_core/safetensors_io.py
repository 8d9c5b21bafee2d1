"""Read a safetensors file: into tensors that own their memory (:func:`read_file`), or mapped (:func:`map_file`).

``safetensors.torch.load_file`` returns tensors backed by a private memory map of
the file: every page they touch counts in the process's memory for as long as
any of them lives, and writing one in place copies the page. The loader instead
processes each weight in place and hands it to the model, so it reads each
tensor with ordinary file reads straight into a buffer of its own: the
checkpoint is in memory once, as the model's parameters, never twice.

:func:`map_file` is what the loader uses: it maps each tensor copy-on-write
(``MAP_PRIVATE``) and returns views of the mappings, so nothing is read until a
computation touches it, and the processing reads each weight straight from the
page cache into its final buffer (no copy-then-process). A write to a mapped
tensor changes this process's copy of the page, never the file. Each tensor has a
mapping of its own, released when the last view of it is freed, so the file's
pages leave the process's memory as the loader finishes with each weight. The
mappings are for the load only: :meth:`MappedFile.aliases` tells the loader
which results still view the file, and it copies those (a model never keeps a
mapped weight; until a page is written, a private mapping still shows what
another process writes to the file, and a truncated file would fault).

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian
header length, a JSON header mapping each name to ``dtype``, ``shape`` and
``data_offsets`` (relative to the end of the header), then the raw little-endian
bytes. The header is checked (offsets inside the file, sizes matching shapes)
before anything is read.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import weakref
import struct
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
    **({"F8_E4M3": torch.float8_e4m3fn} if hasattr(torch, "float8_e4m3fn") else {}),
    **({"F8_E5M2": torch.float8_e5m2} if hasattr(torch, "float8_e5m2") else {}),
}
MAX_HEADER_BYTES = 100 * 2**20


class SafetensorsError(ValueError):
    """The file is not a readable safetensors file; the message says what is wrong."""


def _header_json(path: str | os.PathLike) -> tuple[int, dict]:
    """(the header's length, the header as JSON, ``__metadata__`` included), the length checked against the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise SafetensorsError(f"{path}: header length {n} does not fit the file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SafetensorsError(f"{path}: the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is not a JSON object")
    return n, header


def _metadata(path: str | os.PathLike, header: dict) -> dict[str, str]:
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{path}: __metadata__ is not a table of strings")
    return metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The header's ``__metadata__`` (string keys and values), or {} when it has none."""
    return _metadata(path, _header_json(path)[1])


def read_header(path: Path, metadata: Optional[dict[str, str]] = None) -> tuple[int, dict]:
    """(offset of the data section, {name: {"dtype", "shape", "data_offsets"}}), checked against the file size.
    ``metadata``: a dict to fill with the header's ``__metadata__`` (its string values: a checkpoint's other
    metadata is no reason to refuse its weights)."""
    size = os.path.getsize(path)
    n, header = _header_json(path)
    found = header.pop("__metadata__", None)
    if metadata is not None and isinstance(found, dict):
        metadata.update({key: value for key, value in found.items() if isinstance(value, str)})
    base = 8 + n
    for name, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r} has an unsupported or malformed entry {info!r}") from None
        expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if min(shape, default=0) < 0 or not 0 <= start <= end <= size - base or end - start != expected:
            raise SafetensorsError(f"{path}: tensor {name!r} ({info['dtype']} {shape}) has offsets {start}-{end} "
                                   f"that do not match its size or the file")
    return base, header


def read_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, each in its own (not memory-mapped) buffer, in file order."""
    if sys.byteorder != "little":
        raise SafetensorsError("reading safetensors on a big-endian machine is not supported")
    path = Path(path)
    base, header = read_header(path)
    tensors: dict[str, torch.Tensor] = {}
    with open(path, "rb", buffering=0) as f:
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            start, end = info["data_offsets"]
            tensor = torch.empty([int(s) for s in info["shape"]], dtype=DTYPES[info["dtype"]])
            if end > start:
                buffer = memoryview(tensor.view(-1).view(torch.uint8).numpy()).cast("B")
                f.seek(base + start)
                done = 0
                while done < len(buffer):
                    got = f.readinto(buffer[done:])
                    if not got:
                        raise SafetensorsError(f"{path}: the file ended inside tensor {name!r}")
                    done += got
            tensors[name] = tensor
    return tensors


# A tensor that does not start on this boundary is copied when mapped: matrix-vector products
# (MKL) may round differently on a misaligned matrix, and results must not depend on the file's layout
# (seen: torch.mv on a row-major matrix starting 4, 8 or 12 bytes past a 16-byte boundary).
ALIGNMENT = 64


class MappedFile:
    """The tensors of :func:`map_file` (``tensors``, in file order) and the mappings behind them."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.metadata: dict[str, str] = {}  # the header's ``__metadata__``
        self._regions: list[tuple[weakref.ref, int, int]] = []

    def _map(self, fd: int, start: int, end: int, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
        page = start - start % mmap.ALLOCATIONGRANULARITY
        region = mmap.mmap(fd, end - page, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=page)
        tensor = torch.frombuffer(region, dtype=dtype, count=math.prod(shape), offset=start - page).view(shape)
        address = tensor.data_ptr() - (start - page)
        self._regions.append((weakref.ref(region), address, address + len(region)))
        return tensor

    def aliases(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor``'s memory lies in one of this file's mappings that is still open."""
        ptr = tensor.untyped_storage().data_ptr()
        return any(lo <= ptr < hi for ref, lo, hi in self._regions if ref() is not None)


def map_file(path: str | os.PathLike, one_mapping: bool = False,
             copy_into: Optional[Callable[[list[int], torch.dtype], torch.Tensor]] = None) -> MappedFile:
    """Every tensor of a safetensors file as a copy-on-write view of the file (module docstring); a tensor
    not aligned to ``ALIGNMENT`` bytes in the file, or empty, gets a buffer of its own instead.
    ``one_mapping``: all tensors view one mapping of the whole file, open while any of them lives (one file
    descriptor for a model that keeps its views, where one mapping per tensor would hold hundreds).
    ``copy_into(shape, dtype)``: where a misaligned tensor is copied (an uninitialised tensor; by default new memory)."""
    if sys.byteorder != "little":
        raise SafetensorsError("reading safetensors on a big-endian machine is not supported")
    path = Path(path)
    mapped = MappedFile()
    base, header = read_header(path, mapped.metadata)
    fd = os.open(path, os.O_RDONLY)
    whole = None
    try:
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            start, end = (base + int(o) for o in info["data_offsets"])
            dtype, shape = DTYPES[info["dtype"]], [int(s) for s in info["shape"]]
            if end == start:
                tensor = torch.empty(shape, dtype=dtype)
            elif one_mapping:
                if whole is None:
                    whole = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
                    address = torch.frombuffer(whole, dtype=torch.uint8, count=1).data_ptr()
                    mapped._regions.append((weakref.ref(whole), address, address + len(whole)))
                tensor = torch.frombuffer(whole, dtype=dtype, count=math.prod(shape), offset=start).view(shape)
            else:
                tensor = mapped._map(fd, start, end, dtype, shape)
            if tensor.data_ptr() % ALIGNMENT:
                tensor = tensor.clone() if copy_into is None else copy_into(shape, dtype).copy_(tensor)
            mapped.tensors[name] = tensor
    finally:
        os.close(fd)
    return mapped


# Names of the filler entries :func:`header_bytes` puts between tensors (the format allows no gaps).
PADDING_PREFIX = "__padding__."


def header_bytes(entries: list[tuple[str, torch.dtype, list[int], int, int]], metadata: dict[str, str],
                 data_start: int) -> bytes:
    """The first ``data_start`` bytes of a safetensors file whose tensors lie where ``entries`` say:
    (name, dtype, shape, start, end), offsets from ``data_start``, not overlapping. The format allows no
    gaps between tensors, so a filler ``U8`` entry named ``PADDING_PREFIX + n`` takes up each one (other
    readers see it as one more small tensor), and the JSON is padded with spaces up to ``data_start``.
    Raises SafetensorsError when the header does not fit in ``data_start`` bytes."""
    codes = {dtype: code for code, dtype in DTYPES.items()}
    header: dict = {"__metadata__": dict(metadata)}
    offset = 0
    for name, dtype, shape, start, end in sorted(entries, key=lambda entry: (entry[3], entry[4])):
        if name.startswith(PADDING_PREFIX) or start < offset:
            raise SafetensorsError(f"tensor {name!r}: reserved name, or it overlaps the one before")
        if start > offset:
            header[f"{PADDING_PREFIX}{len(header)}"] = {"dtype": "U8", "shape": [start - offset],
                                                        "data_offsets": [offset, start]}
        header[name] = {"dtype": codes[dtype], "shape": list(shape), "data_offsets": [start, end]}
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode()
    if 8 + len(raw) > data_start:
        raise SafetensorsError(f"the header takes {8 + len(raw)} bytes, more than the {data_start} set aside")
    return struct.pack("<Q", data_start - 8) + raw + b" " * (data_start - 8 - len(raw))
