"""Tensors of a safetensors or ``.npy``-in-``.npz`` file, memory-mapped instead of read.

A large dictionary (a cross-layer transcoder of a 2B model is tens of GB) should cost
memory only for the pages a computation touches. :func:`open_safetensors` maps the file
(copy-on-write, so an in-place edit changes this process's copy, never the file) and
returns tensors that view the mapping: nothing is read until used. The header is checked
first (``lens_core.safetensors_io.read_header``: offsets inside the file, sizes matching
shapes). bfloat16 is mapped as 16-bit integers and viewed as bfloat16 (numpy has no bf16).

:func:`file_backed` tells whether a tensor's memory lies in a mapping of a given file
(``/proc/self/maps``, Linux), so tests can check that loading did not read the weights.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from lens_core.safetensors_io import DTYPES, SafetensorsError, read_header

from .transcoder import FeaturesUnavailable

_NUMPY = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64,
          torch.int32: np.int32, torch.int16: np.int16, torch.int8: np.int8, torch.uint8: np.uint8, torch.bool: np.bool_}
_SAME_WIDTH = {torch.bfloat16: (np.uint16, torch.int16)}


def open_safetensors(path: Union[str, Path], lazy: bool = True) -> dict[str, torch.Tensor]:
    """{name: tensor} of one safetensors file; memory-mapped when ``lazy``, else read into memory.

    A missing, truncated or corrupt file raises FeaturesUnavailable naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FeaturesUnavailable(f"missing dictionary file {path}")
    if sys.byteorder != "little":
        raise FeaturesUnavailable("reading safetensors on a big-endian machine is not supported")
    try:
        base, header = read_header(path)
    except (SafetensorsError, OSError) as exc:
        detail = str(exc)  # the reader's message starts with the path: name it once
        if detail.startswith(f"{path}: "):
            detail = detail[len(f"{path}: "):]
        elif detail.startswith(f"{path} "):
            detail = "it" + detail[len(str(path)):]
        raise FeaturesUnavailable(f"cannot read {path} (corrupt or truncated?): {detail}") from exc
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        dtype, shape = DTYPES[info["dtype"]], [int(s) for s in info["shape"]]
        start, end = (int(o) for o in info["data_offsets"])
        if end == start:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        np_dtype, via = (_NUMPY.get(dtype), None) if dtype not in _SAME_WIDTH else _SAME_WIDTH[dtype]
        if np_dtype is None:
            raise FeaturesUnavailable(f"{path}: tensor {name!r} has dtype {info['dtype']}, which cannot be mapped")
        array = np.memmap(path, dtype=np_dtype, mode="c", offset=base + start, shape=tuple(shape))
        tensor = torch.from_numpy(array)
        if via is not None:
            tensor = tensor.view(via).view(dtype)
        out[name] = tensor if lazy else tensor.clone()
    return out


def open_npz(path: Union[str, Path]) -> dict[str, torch.Tensor]:
    """{name: tensor} of a numpy ``.npz`` archive (read, not mapped: members are zip entries); never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise FeaturesUnavailable(f"missing dictionary file {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: torch.from_numpy(np.ascontiguousarray(archive[name])) for name in archive.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object arrays), EOFError...
        raise FeaturesUnavailable(f"cannot read {path} (corrupt or truncated?): {type(exc).__name__}: {exc}") from exc


def file_backed(tensor: torch.Tensor, path: Union[str, Path]) -> Optional[bool]:
    """Whether ``tensor``'s memory lies inside a mapping of ``path`` (None where /proc/self/maps is absent)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    target = str(Path(path).resolve())
    ptr = tensor.untyped_storage().data_ptr()
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].strip() == target:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return True
    return False
