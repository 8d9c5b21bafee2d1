"""TransformerLens's notebook surface on HookedTransformer: model-wide hooks and small helpers.

Model-wide hooks (``add_hook``, ``add_perma_hook``, ``hooks(reset_hooks_end=False)``) are what a
notebook expects: attached to the hook point, seen by every thread, kept until ``reset_hooks``.
The app never uses them: its hooks go through ``run_with_hooks`` / ``hooks()`` and stay private
to the call and thread (see ``lens_core.hooks``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from .factored_matrix import FactoredMatrix
from .hooks import HookFn, resolve_names
from .padding import mask_for

NameOrFilter = Union[str, Callable[[str], bool]]


class TransformerLensMixin:
    hook_dict: dict
    cfg: Any

    # ---------------------------------------------------------------- model-wide hooks
    def add_hook(self, name: NameOrFilter, hook: HookFn, dir: str = "fwd", is_permanent: bool = False,
                 level: Optional[int] = None, prepend: bool = False) -> None:
        """Attach ``hook(tensor, hook_point)`` to every point ``name`` selects, for all later runs and threads."""
        for point_name in resolve_names(name, self.hook_dict):
            self.hook_dict[point_name].add_hook(hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def add_perma_hook(self, name: NameOrFilter, hook: HookFn, dir: str = "fwd") -> None:
        """A model-wide hook that ``reset_hooks()`` keeps (``including_permanent=True`` removes it)."""
        self.add_hook(name, hook, dir=dir, is_permanent=True)

    def remove_all_hook_fns(self, direction: str = "both", including_permanent: bool = False, level: Optional[int] = None) -> None:
        for point in self.hook_dict.values():
            point.remove_hooks(direction, including_permanent=including_permanent, level=level)

    def clear_contexts(self) -> None:
        for point in self.hook_dict.values():
            point.clear_context()

    def reset_hooks(self, clear_contexts: bool = True, direction: str = "both", including_permanent: bool = False,
                    level: Optional[int] = None) -> None:
        """Remove model-wide hooks (permanent ones stay unless asked) and, by default, every ``hook.ctx``."""
        if clear_contexts:
            self.clear_contexts()
        self.remove_all_hook_fns(direction, including_permanent=including_permanent, level=level)

    context_level: int = 0  # TransformerLens's counter; hooks(reset_hooks_end=False) tags its hooks with it

    @property
    def mod_dict(self) -> dict:
        """Every submodule and hook point by name (TransformerLens's ``mod_dict``)."""
        modules = {name: module for name, module in self.named_modules() if name}
        modules.update(self.hook_dict)
        return modules

    def list_hooks(self, name_filter: Any = None, dir: str = "both", including_permanent: bool = True) -> dict:
        """Model-wide hooks by hook point name (points with none are left out), as handles."""
        out = {}
        for name in resolve_names(name_filter, self.hook_dict):
            point = self.hook_dict[name]
            handles = (point.fwd_hooks if dir in ("fwd", "both") else []) + (point.bwd_hooks if dir in ("bwd", "both") else [])
            handles = [h for h in handles if including_permanent or not h.is_permanent]
            if handles:
                out[name] = handles
        return out

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> Any:
        """Also takes a TransformerLens ``HookedTransformer`` state dict (``lens_core.tl_state_dict``)."""
        from .tl_state_dict import from_tl, looks_like_tl

        if looks_like_tl(state_dict):
            state_dict = from_tl(self, state_dict)
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._weights_hash = None
        return result

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Cache ``hook_result`` (per-head outputs) in ``run_with_cache`` without naming it."""
        self.cfg.use_attn_result = use_attn_result

    # ---------------------------------------------------------------- tokens
    def to_single_str_token(self, int_token: int) -> str:
        if not isinstance(int_token, int):
            raise TypeError(f"to_single_str_token takes an int, got {type(int_token).__name__}")
        return self.to_str_tokens(torch.tensor([int_token]))[0]

    def get_token_position(self, single_token: Union[str, int], input: Union[str, torch.Tensor], mode: str = "first",
                           prepend_bos: Optional[bool] = None, padding_side: Optional[str] = None) -> int:
        """Where ``single_token`` first (or last) occurs in ``input``; an error if it does not."""
        tokens = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side) if isinstance(input, str) else input
        if tokens.dim() == 2:
            if tokens.shape[0] != 1:
                raise ValueError(f"tokens of rank two must have shape [1, seq_len], not {tuple(tokens.shape)}")
            tokens = tokens[0]
        if isinstance(single_token, str):
            single_token = self.to_single_token(single_token)
        elif isinstance(single_token, torch.Tensor):
            single_token = int(single_token.item())
        where = torch.nonzero(tokens == single_token)[:, 0]
        if len(where) == 0:
            raise ValueError("The token does not occur in the prompt")
        if mode not in ("first", "last"):
            raise ValueError(f"mode must be 'first' or 'last', not {mode!r}")
        return int(where[0] if mode == "first" else where[-1])

    def input_to_embed(self, input: Union[str, list, torch.Tensor], prepend_bos: Optional[bool] = None,
                       padding_side: Optional[str] = None, attention_mask: Optional[torch.Tensor] = None):
        """``(residual entering block 0, tokens, None, attention_mask)``, as TransformerLens returns it."""
        if isinstance(input, (str, list)):
            tokens = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)
        else:
            tokens = input[None] if input.dim() == 1 else input
        attention_mask = mask_for(self, tokens, attention_mask, padding_side, prepend_bos)
        residual = self(tokens, stop_at_layer=0, attention_mask=attention_mask)
        return residual, tokens, None, attention_mask

    # ---------------------------------------------------------------- weights
    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> torch.Tensor:
        """Sum of the attention (and MLP) output biases written before ``layer`` [d_model]."""
        total = torch.zeros(self.cfg.d_model, device=self.W_E.device, dtype=self.W_E.dtype)
        for l in range(layer):
            total = total + self.blocks[l].attn.b_O
            if include_mlp_biases and not getattr(self.cfg, "attn_only", False):
                total = total + self.blocks[l].mlp.b_out
        if mlp_input:
            if layer >= self.cfg.n_layers:
                raise ValueError("Cannot include attn_bias from beyond the final layer")
            total = total + self.blocks[layer].attn.b_O
        return total

    @property
    def W_E_pos(self) -> torch.Tensor:
        """``W_E`` and ``W_pos`` stacked: [d_vocab + n_ctx, d_model]."""
        return torch.cat([self.W_E, self.W_pos], dim=0)

    @property
    def QK(self) -> FactoredMatrix:
        """Every head's QK circuit ``W_Q @ W_K^T``: [n_layers, n_heads, d_model, d_model], factored."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """Every head's OV circuit ``W_V @ W_O``: [n_layers, n_heads, d_model, d_model], factored."""
        return FactoredMatrix(self.W_V, self.W_O)

    def all_head_labels(self) -> list[str]:
        return [f"L{l}H{h}" for l in range(self.cfg.n_layers) for h in range(self.cfg.n_heads)]

    def init_weights(self, seed: Optional[int] = None) -> None:
        """TransformerLens's initialisation for ``cfg.init_mode`` ("gpt2", "xavier_uniform", "xavier_normal",
        "kaiming_uniform", "kaiming_normal"), draw for draw as its native models (see ``lens_core.init_utils``).
        ``seed`` (else ``cfg.seed``) makes it reproducible without touching the global generator."""
        from .init_utils import init_model

        init_model(self, seed)
        self._weights_hash = None
