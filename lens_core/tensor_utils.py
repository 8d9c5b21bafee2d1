"""TransformerLens's small tensor and matrix helpers (its ``utilities.tensors`` and ``utilities.matrix``).

Re-exported by :mod:`lens_core.utils` under the same names, as TransformerLens's ``utils`` does.
"""

from __future__ import annotations

import functools
from typing import Any

import torch


def is_square(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 2-D square matrix."""
    return x.ndim == 2 and x.shape[0] == x.shape[1]


def is_lower_triangular(x: torch.Tensor) -> bool:
    """Whether ``x`` is square and equal to its lower triangle."""
    return is_square(x) and bool(torch.equal(x, x.tril()))


def get_offset_position_ids(past_kv_pos_offset: int, attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only attended tokens ([batch, pos] from ``past_kv_pos_offset`` on):
    the first real token of each row gets 0; the left padding before it gets 0 too."""
    counted = attention_mask.cumsum(dim=1) - 1
    return counted.clamp_min(0)[:, past_kv_pos_offset:]


def get_cumsum_along_dim(tensor: torch.Tensor, dim: int, reverse: bool = False) -> torch.Tensor:
    """Cumulative sum along ``dim``; with ``reverse`` from the end (each entry sums itself and what follows)."""
    if not reverse:
        return tensor.cumsum(dim=dim)
    return tensor.flip(dims=(dim,)).cumsum(dim=dim).flip(dims=(dim,))


def repeat_along_head_dimension(tensor: torch.Tensor, n_heads: int, clone_tensor: bool = True) -> torch.Tensor:
    """[batch, pos, d_model] -> [batch, pos, n_heads, d_model]; a copy unless ``clone_tensor=False`` (a view)."""
    repeated = tensor[:, :, None, :].expand(-1, -1, n_heads, -1)
    return repeated.clone() if clone_tensor else repeated


def composition_scores(left: Any, right: Any, broadcast_dims: bool = True) -> torch.Tensor:
    """``||left @ right||_F / (||left||_F ||right||_F)`` for two FactoredMatrix objects, from their SVDs.

    With ``broadcast_dims`` every left/right pair is scored: the result has ``left``'s leading
    axes, then ``right``'s.
    """
    if broadcast_dims:
        n_left, n_right = left.ndim - 2, right.ndim - 2
        for axis in range(n_left):
            right = right.unsqueeze(axis)
        for axis in range(n_right):
            left = left.unsqueeze(n_left + axis)
    if left.rdim != right.ldim:
        raise ValueError(f"composition scores need left.rdim == right.ldim, got {tuple(left.shape)} and {tuple(right.shape)}")
    new_left, new_right = left.collapse_l(), right.collapse_r()
    norms = new_left.norm(dim=(-2, -1)) * new_right.norm(dim=(-2, -1))
    return (new_left @ new_right).norm(dim=(-2, -1)) / norms


def get_matrix_corner(matrix: Any, n: int = 3) -> torch.Tensor:
    """The top-left corner of a FactoredMatrix's dense product along every axis."""
    return matrix[tuple(slice(n) for _ in range(matrix.ndim))].AB


def get_nested_attr(obj: Any, attr_str: str) -> Any:
    """``get_nested_attr(model, "blocks.0.attn.W_Q")``: getattr along a dotted path."""
    return functools.reduce(getattr, attr_str.split("."), obj)


def set_nested_attr(obj: Any, attr_str: str, value: Any) -> None:
    """Set the attribute at the end of a dotted path."""
    *path, last = attr_str.split(".")
    setattr(get_nested_attr(obj, ".".join(path)) if path else obj, last, value)
