"""Weight initialisation as TransformerLens does it, under its module's names.

The helpers ``calc_fan_in_and_fan_out``, ``init_xavier_uniform_``, ``init_xavier_normal_``,
``init_kaiming_uniform_`` and ``init_kaiming_normal_`` are TransformerLens's
(``transformer_lens.utilities.initialization_utils``): fans in TransformerLens's weight layout
(``[d_in, d_out]``, attention ``[head, d_model, d_head]``), drawing from the global generator.

:func:`init_model` is what ``HookedTransformer(cfg)`` runs (``cfg.init_mode``): the scheme of
TransformerLens 4's native models, draw for draw. Every weight is drawn in float32 on the CPU, in
PyTorch's ``nn.Linear`` layout (``[d_out, d_in]``; q, k and v as three matrices) and in the native
model's order (embedding, positions, then per block q, k, v, o and the MLP's in/gate and out, then
the unembedding), from a generator seeded with ``seed`` (else ``cfg.seed``; unseeded: the global
one), so a seed gives the weights TransformerLens gives. ``"gpt2"``: N(0, std), std =
``initializer_range`` (default 0.8/sqrt(d_model)), output projections (W_O, W_out) scaled by
1/sqrt(2 n_layers). ``"xavier_*"``: PyTorch's, with ``initializer_range`` as the gain (default 1).
``"kaiming_*"``: PyTorch's for relu (fan in), times that gain. Norm weights 1, biases 0.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn


def calc_fan_in_and_fan_out(tensor: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) in TransformerLens's layout: a vector (1, n); a matrix [d_in, d_out];
    an attention weight [head, d_model, d_head] (d_model, head * d_head)."""
    shape = tensor.shape
    if len(shape) == 0:
        raise ValueError("Fan in and fan out can not be computed for scalars.")
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 3:
        return shape[1], shape[0] * shape[2]
    raise ValueError(f"Fan in and fan out can not be computed for shape {shape} tensors.")


def init_xavier_uniform_(param: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    fan_in, fan_out = calc_fan_in_and_fan_out(param)
    bound = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return nn.init.uniform_(param, -bound, bound)


def init_xavier_normal_(param: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    fan_in, fan_out = calc_fan_in_and_fan_out(param)
    return nn.init.normal_(param, mean=0.0, std=gain * np.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_scale(param: torch.Tensor, a: float, nonlinearity: str, gain: float, mode: str) -> float:
    fan_in, fan_out = calc_fan_in_and_fan_out(param)
    return gain * nn.init.calculate_gain(nonlinearity, a) / np.sqrt(fan_in if mode == "fan_in" else fan_out)


def init_kaiming_uniform_(param: torch.Tensor, a: float = 0, nonlinearity: str = "relu", gain: float = 1.0,
                          mode: str = "fan_in") -> torch.Tensor:
    bound = _kaiming_scale(param, a, nonlinearity, gain, mode) * np.sqrt(3.0)
    return nn.init.uniform_(param, -bound, bound)


def init_kaiming_normal_(param: torch.Tensor, a: float = 0, nonlinearity: str = "relu", gain: float = 1.0,
                         mode: str = "fan_in") -> torch.Tensor:
    return nn.init.normal_(param, mean=0.0, std=_kaiming_scale(param, a, nonlinearity, gain, mode))


# ---------------------------------------------------------------- whole models
def _drawers(cfg: Any, generator: Optional[torch.Generator]) -> tuple[Callable, Callable]:
    """(weight, output-projection) draws: each takes a shape in nn.Linear layout and returns a float32 tensor."""
    mode = cfg.init_mode
    if mode == "gpt2":
        std = cfg.initializer_range if cfg.initializer_range > 0 else 0.8 / math.sqrt(cfg.d_model)
        out_std = std / math.sqrt(2 * cfg.n_layers)
        draw = lambda shape, s=std: nn.init.normal_(torch.empty(shape), 0.0, s, generator=generator)  # noqa: E731
        return draw, (lambda shape: draw(shape, out_std))
    gain = cfg.initializer_range if cfg.initializer_range > 0 else 1.0
    torch_init = {
        "xavier_uniform": lambda t: nn.init.xavier_uniform_(t, gain=gain, generator=generator),
        "xavier_normal": lambda t: nn.init.xavier_normal_(t, gain=gain, generator=generator),
        "kaiming_uniform": lambda t: nn.init.kaiming_uniform_(t, nonlinearity="relu", generator=generator).mul_(gain),
        "kaiming_normal": lambda t: nn.init.kaiming_normal_(t, nonlinearity="relu", generator=generator).mul_(gain),
    }[mode]
    draw = lambda shape: torch_init(torch.empty(shape))  # noqa: E731
    return draw, draw


@torch.no_grad()
def init_model(model: Any, seed: Optional[int] = None) -> None:
    """Initialise every weight of ``model`` as TransformerLens 4 does for ``cfg.init_mode`` (module docstring)."""
    cfg = model.cfg
    seed = seed if seed is not None else cfg.seed
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    weight, output = _drawers(cfg, generator)
    h, kv, e, d = cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_model
    for name, param in model.named_parameters():  # norms' weights 1, every bias 0; the draws below fill the rest
        last = name.rsplit(".", 1)[-1]
        if last == "w":
            param.fill_(1.0)
        elif last.startswith("b"):
            param.zero_()
    model.embed.W_E.copy_(weight((cfg.d_vocab, d)))
    if hasattr(model, "pos_embed"):
        model.pos_embed.W_pos.copy_(weight((cfg.n_ctx, d)))
    for block in model.blocks:
        attn = block.attn
        q, k, v = weight((h * e, d)), weight((kv * e, d)), weight((kv * e, d))
        attn.W_QKV.copy_(torch.cat([q, k, v], dim=0).T)
        attn.W_O.copy_(output((d, h * e)).T.reshape(h, e, d))
        mlp = block.mlp
        if mlp is None:
            continue
        if cfg.gated_mlp:
            mlp.W_gate.copy_(weight((cfg.d_mlp, d)).T)
        mlp.W_in.copy_(weight((cfg.d_mlp, d)).T)
        mlp.W_out.copy_(output((d, cfg.d_mlp)).T)
    model.unembed.weight.copy_(weight((cfg.d_vocab_out, d)))
