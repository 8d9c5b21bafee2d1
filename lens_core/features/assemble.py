"""Build a Transcoder (or SkipTranscoder) around tensors that are already in memory or memory-mapped.

``build_transcoder`` (transcoder.py) allocates zeroed parameters and copies into them, which reads
every weight. :func:`assemble_transcoder` instead constructs the module on the ``meta`` device and
assigns the given tensors as its parameters, so a memory-mapped file stays mapped (no copy) when
its dtype is already the one asked for. Every shape is checked against the config first; an error
names the file and the tensor.
"""

from __future__ import annotations

from typing import Mapping, Optional, Type

import torch
from torch import nn

from .transcoder import FeaturesUnavailable, Transcoder, TranscoderConfig

OPTIONAL = ("b_in", "threshold")


def assemble_transcoder(cfg: TranscoderConfig, tensors: Mapping[str, torch.Tensor], source: str,
                        dtype: torch.dtype = torch.float32, cls: Type[Transcoder] = Transcoder) -> Transcoder:
    """A ``cls`` whose parameters are ``tensors`` (converted to ``dtype`` only where they differ)."""
    with torch.device("meta"):
        tc = cls(cfg)
    expected = {name: tuple(t.shape) for name, t in tc.state_dict().items()}
    for name, shape in expected.items():
        if name not in tensors:
            if name in OPTIONAL:
                continue
            raise FeaturesUnavailable(f"{source}: layer {cfg.layer} lacks tensor {name!r}")
        if tuple(tensors[name].shape) != shape:
            raise FeaturesUnavailable(
                f"{source}: layer {cfg.layer} tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape} "
                f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}, d_out={cfg.d_out})")
    if cfg.activation == "jumprelu" and "threshold" not in tensors:
        raise FeaturesUnavailable(f"{source}: layer {cfg.layer} is JumpReLU but has no threshold tensor")
    params = {name for name, _ in tc.named_parameters()}
    for name, shape in expected.items():
        if name in tensors:
            value = tensors[name].to(dtype)
        elif name == "threshold":
            value = torch.full(shape, float(cfg.threshold), dtype=dtype)
        else:
            value = torch.zeros(shape, dtype=dtype)
        setattr(tc, name, nn.Parameter(value) if name in params else value)
    tc.source = source
    return tc


def fit_error(source: str, exc: Exception, prefix: Optional[str] = None) -> FeaturesUnavailable:
    """The same message, prefixed by the file it concerns (once)."""
    text = str(exc)
    return FeaturesUnavailable(text if text.startswith(source) else f"{prefix or source}: {text}")
