"""Rotary position embeddings (rotate-half convention: GPT-NeoX, Llama, Gemma, Qwen), with Llama 3 and linear scaling."""

from __future__ import annotations

import math

import torch

from .config import HookedTransformerConfig


def rotary_cos_sin(cfg: HookedTransformerConfig, n_pos: int, device: torch.device,
                   local: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [pos, rotary_dim] for the rotate-half convention (GPT-NeoX, Llama).
    ``local``: a sliding-window layer of a model with its own local base (Gemma 3: unscaled)."""
    dim = cfg.rotary_dim
    local = local and cfg.rotary_base_local is not None
    base = cfg.rotary_base_local if local else cfg.rotary_base
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    scaling = {} if local else (cfg.rope_scaling or {})
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif rope_type == "llama3":
        factor, old_len = scaling["factor"], scaling["original_max_position_embeddings"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    elif rope_type != "default":
        raise NotImplementedError(f"rotary scaling {rope_type!r} is not supported")
    freqs = torch.outer(torch.arange(n_pos, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first rotary_dim dims of each head. x: [batch, pos, head, d_head]; cos, sin: [pos, rotary_dim]
    or, for a padded batch (each row its own positions), [batch, pos, rotary_dim]."""
    dim = cos.shape[-1]
    rot, keep = x[..., :dim], x[..., dim:]
    cos, sin = cos[..., None, :].to(x.dtype), sin[..., None, :].to(x.dtype)  # [(batch,) pos, 1, rotary_dim]
    half = dim // 2
    rotated_half = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    return torch.cat([rot * cos + rotated_half * sin, keep], dim=-1)
