"""Gemma Scope transcoders (JumpReLU), as Google publishes them.

* Gemma Scope (``google/gemma-scope-2b-pt-transcoders``): one ``params.npz`` per transcoder, under
  ``layer_{l}/width_{w}/average_l0_{n}/``, with ``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_out],
  ``b_enc`` [d_sae], ``b_dec`` [d_out], ``threshold`` [d_sae]. The layer comes from the path
  (``layer_{l}``) unless given.
* Gemma Scope 2: one ``.safetensors`` per transcoder with lower-case ``w_enc`` [d_in, d_sae],
  ``w_dec`` [d_sae, d_out], ``b_enc``, ``b_dec``, ``threshold`` and, for skip transcoders,
  ``affine_skip_connection`` [d_in, d_out] (the skip term is ``x @ affine_skip_connection``).

    acts = relu(pre) * (pre > threshold),   pre = x @ W_enc + b_enc
    out  = acts @ W_dec + b_dec  (+ x @ W_skip)

Each transcoder reads ``blocks.{l}.ln2.hook_normalized`` (the MLP's input after its pre-norm) and
writes ``blocks.{l}.hook_mlp_out`` unless other hook names are given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional

import torch

from .assemble import assemble_transcoder
from .mmap_io import open_npz, open_safetensors
from .skip import SkipTranscoder
from .transcoder import FeaturesUnavailable, Transcoder, TranscoderConfig

_LAYER = re.compile(r"layer_(\d+)")
DEFAULT_HOOK_IN, DEFAULT_HOOK_OUT = "ln2.hook_normalized", "hook_mlp_out"


def layer_from_path(path: Path, layer: Optional[int]) -> int:
    if layer is not None:
        return int(layer)
    found = _LAYER.findall(str(path))
    if not found:
        raise FeaturesUnavailable(f"{path}: cannot tell which layer this transcoder is for (no 'layer_N' in its path); "
                                  "pass layer=")
    return int(found[-1])


def jumprelu_transcoder(tensors: Mapping[str, torch.Tensor], layer: int, source: str, hook_in: str = DEFAULT_HOOK_IN,
                        hook_out: str = DEFAULT_HOOK_OUT, dtype: torch.dtype = torch.float32) -> Transcoder:
    """From tensors already in this project's orientation (W_enc [d_in, d_sae], W_dec [d_sae, d_out], optional W_skip)."""
    missing = [name for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold") if name not in tensors]
    if missing:
        raise FeaturesUnavailable(f"{source}: not a Gemma Scope transcoder, it lacks {missing} "
                                  f"(has {sorted(tensors)})")
    (d_in, d_sae), d_out = tuple(tensors["W_enc"].shape), int(tensors["b_dec"].shape[0])
    cfg = TranscoderConfig(d_in=d_in, d_sae=d_sae, d_out=d_out, layer=layer, hook_in=f"blocks.{layer}.{hook_in}",
                           hook_out=f"blocks.{layer}.{hook_out}", activation="jumprelu")
    cls = SkipTranscoder if "W_skip" in tensors else Transcoder
    return assemble_transcoder(cfg, tensors, source, dtype, cls)


def read_npz(path: Path, layer: Optional[int] = None, dtype: torch.dtype = torch.float32, **hooks: str) -> Transcoder:
    """A Gemma Scope ``params.npz`` (read into memory: npz members are zip entries, not mappable)."""
    return jumprelu_transcoder(open_npz(path), layer_from_path(path, layer), str(path), dtype=dtype, **hooks)


def from_gemma_scope_2(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gemma Scope 2's lower-case names -> this project's."""
    names = {"w_enc": "W_enc", "w_dec": "W_dec", "b_enc": "b_enc", "b_dec": "b_dec", "threshold": "threshold",
             "affine_skip_connection": "W_skip"}
    return {names[k]: v for k, v in raw.items() if k in names}


def read_gemma_scope_2(path: Path, layer: Optional[int] = None, dtype: torch.dtype = torch.float32, lazy: bool = True,
                       **hooks: str) -> Transcoder:
    return jumprelu_transcoder(from_gemma_scope_2(open_safetensors(path, lazy)), layer_from_path(path, layer), str(path),
                               dtype=dtype, **hooks)
