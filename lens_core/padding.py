"""Batches of prompts of different lengths: attention masks and the position ids that skip padding.

TransformerLens's conventions. A mask is 1 for real tokens and 0 for padding ([batch, pos]). With
left padding the real tokens of a short prompt start late in the row, so their positions are
counted from the first real token (``cumsum(mask) - 1``): the prompt gets the same positional
embedding (or rotation) as when it runs alone, and padding keys are hidden from every query, so a
left-padded batch gives each prompt its own logits. Right padding needs no mask (causal attention
never lets a real token see the pads after it); a mask, if given, changes nothing for real tokens.

Nothing here runs unless a mask is passed or asked for (``padding_side="left"``): the plain forward
pass is untouched.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .tensor_utils import get_offset_position_ids

PADDING_SIDES = ("left", "right")


def check_padding_side(padding_side: Optional[str]) -> None:
    if padding_side is not None and padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")


def effective_padding_side(model: Any, padding_side: Optional[str]) -> str:
    """The side asked for, else the tokenizer's own (TransformerLens reads ``tokenizer.padding_side``)."""
    check_padding_side(padding_side)
    if padding_side is not None:
        return padding_side
    tokenizer = getattr(model, "tokenizer", None)
    return getattr(tokenizer, "padding_side", None) or "right"


def mask_for(model: Any, tokens: torch.Tensor, attention_mask: Optional[torch.Tensor], padding_side: Optional[str],
             prepend_bos: Optional[bool]) -> Optional[torch.Tensor]:
    """The mask a forward pass uses: the one given, else (left padding only, as TransformerLens does)
    the one the pad tokens imply; None when there is nothing to mask."""
    if attention_mask is not None:
        if attention_mask.shape != tokens.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have the tokens' shape {tuple(tokens.shape)}")
        return attention_mask.to(tokens.device)
    if model.tokenizer is None or effective_padding_side(model, padding_side) != "left":
        return None
    from .utils import get_attention_mask

    prepend = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
    mask = get_attention_mask(model.tokenizer, tokens, prepend, "left")
    return None if bool(mask.all()) else mask


def position_ids(attention_mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """[batch, pos - offset]: each real token's index among the real tokens of its row (pads get 0)."""
    return get_offset_position_ids(offset, attention_mask)
