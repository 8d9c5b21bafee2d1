"""Strict access to a Hugging Face state dict: a missing or misshapen tensor fails loudly, by name."""

from __future__ import annotations

from typing import Mapping, Optional

import torch


class WeightReader:
    """``consume=True``: ``tensors`` is a dict the reader may empty; each tensor is removed from it
    when read, so the checkpoint's copy is freed as soon as the converted weight no longer needs it."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = (), consume: bool = False) -> None:
        self.tensors = tensors if consume and isinstance(tensors, dict) else dict(tensors)
        self.consume = consume
        self.prefixes = prefixes
        self.used: set[str] = set()

    def _key(self, name: str) -> Optional[str]:
        for prefix in ("",) + self.prefixes:
            if prefix + name in self.tensors or prefix + name in self.used:
                return prefix + name
        return None

    def has(self, name: str) -> bool:
        return self._key(name) is not None

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        key = self._key(name)
        if key is None:
            raise ValueError(f"checkpoint is missing tensor {name!r} (expected shape {tuple(shape)})")
        if key not in self.tensors:
            raise RuntimeError(f"tensor {key!r} was already consumed: a converter reads each tensor once")
        tensor = self.tensors[key]
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(
                f"checkpoint tensor {key!r} has shape {tuple(tensor.shape)}, but the config implies {tuple(shape)}"
            )
        self.used.add(key)
        if self.consume:
            del self.tensors[key]
        return tensor.float()

    def optional(self, name: str, shape: tuple[int, ...]) -> Optional[torch.Tensor]:
        return self.get(name, shape) if self.has(name) else None


def zeros(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape)


def rope_settings(hf_config) -> tuple[float, float, Optional[dict]]:
    """(base, partial rotary fraction, scaling dict or None) from either config generation."""
    params = getattr(hf_config, "rope_parameters", None) or {}
    base = params.get("rope_theta", getattr(hf_config, "rope_theta", getattr(hf_config, "rotary_emb_base", 10000.0)))
    fraction = params.get("partial_rotary_factor", getattr(hf_config, "partial_rotary_factor", getattr(hf_config, "rotary_pct", 1.0)))
    scaling = dict(params) if params.get("rope_type", "default") != "default" else getattr(hf_config, "rope_scaling", None)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    return float(base), float(fraction), scaling
