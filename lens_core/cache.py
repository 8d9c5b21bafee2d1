"""ActivationCache: the activations of one run, with TransformerLens's shorthand and residual-stream tools.

Stacks of residual components have the component axis first:
``[component, batch, pos, d_model]`` (no batch axis if the cache has none).
Semantics follow TransformerLens: ``layer`` None, -1 or n_layers means the residual stream
entering the unembedding (through the final norm); an integer ``pos_slice`` indexes the
position axis away (``pos_slice=-1`` gives ``[component, batch, d_model]``), a list keeps it.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Optional, Union

import torch

from .cache_neurons import NeuronDecompositionMixin
from .utils import Slice, get_act_name

PosSlice = Union[None, int, slice, tuple, list, torch.Tensor, Slice]


class ActivationCache(NeuronDecompositionMixin):
    def __init__(self, cache_dict: dict[str, torch.Tensor], model: Any, has_batch_dim: bool = True) -> None:
        self.cache_dict = cache_dict
        self.model = model
        self.has_batch_dim = has_batch_dim

    @property
    def has_embed(self) -> bool:
        return "hook_embed" in self.cache_dict

    @property
    def has_pos_embed(self) -> bool:
        """Whether positions are part of the residual stream (not for shortformer models: they join q and k only)."""
        return "hook_pos_embed" in self.cache_dict and self.model.cfg.positional_embedding_type != "shortformer"

    # ------------------------------------------------------------- dict-like
    def _name(self, key: Union[str, tuple]) -> str:
        if isinstance(key, str):
            return key if key in self.cache_dict else get_act_name(key)
        name, *rest = key
        layer = rest[0] if rest else None
        layer_type = rest[1] if len(rest) > 1 else None
        if layer is not None and layer < 0:
            layer += self.model.cfg.n_layers
        return get_act_name(name, layer, layer_type)

    def __getitem__(self, key: Union[str, tuple]) -> torch.Tensor:
        name = self._name(key)
        try:
            return self.cache_dict[name]
        except KeyError:
            raise KeyError(f"{name!r} is not in this cache (was it left out by names_filter?)") from None

    def __contains__(self, key: Union[str, tuple]) -> bool:
        try:
            return self._name(key) in self.cache_dict
        except ValueError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def __len__(self) -> int:
        return len(self.cache_dict)

    def keys(self):
        return self.cache_dict.keys()

    def values(self):
        return self.cache_dict.values()

    def items(self):
        return self.cache_dict.items()

    def to(self, device: Union[str, torch.device]) -> "ActivationCache":
        """Move every activation (in place, as TransformerLens does) and return the cache."""
        self.cache_dict = {k: v.to(device) for k, v in self.cache_dict.items()}
        return self

    def toggle_autodiff(self, mode: bool = False) -> None:
        """``torch.set_grad_enabled(mode)``: global state, as in TransformerLens (prefer ``torch.inference_mode``)."""
        logging.warning("Changed the global state, set autodiff to %s", mode)
        torch.set_grad_enabled(mode)

    def _batch_size(self) -> int:
        sizes = [v.shape[0] for v in self.cache_dict.values() if v.dim() > 0]
        return max(set(sizes), key=sizes.count) if sizes else 1

    def remove_batch_dim(self, batch_size: Optional[int] = None) -> "ActivationCache":
        """Drop the batch axis of a batch of one, in place (as TransformerLens does); returns the cache."""
        if not self.has_batch_dim:
            logging.warning("Tried removing batch dimension after already having removed it.")
            return self
        batch_size = self._batch_size() if batch_size is None else batch_size
        if batch_size != 1:
            raise ValueError(f"Cannot remove batch dimension from cache with batch size {batch_size}")
        self.cache_dict = {k: (v[0] if v.dim() > 0 and v.shape[0] == 1 else v) for k, v in self.cache_dict.items()}
        self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self, batch_slice: Any) -> "ActivationCache":
        """A new cache holding only the selected batch items (an integer drops the batch axis)."""
        batch_slice = batch_slice if isinstance(batch_slice, Slice) else Slice(batch_slice)
        if not self.has_batch_dim and batch_slice.mode != "identity":
            raise ValueError("Cannot index into a cache without a batch dim")
        batch = self._batch_size()
        sliced = {k: (batch_slice.apply(v, 0) if v.dim() > 0 and v.shape[0] == batch else v) for k, v in self.cache_dict.items()}
        return ActivationCache(sliced, self.model, has_batch_dim=self.has_batch_dim and batch_slice.mode != "int")

    def __repr__(self) -> str:
        return f"ActivationCache with keys {list(self.cache_dict)}"

    def _layer(self, layer: Optional[int]) -> int:
        """None and -1 mean n_layers (the unembedding's input); other negatives count from the end."""
        n_layers = self.model.cfg.n_layers
        if layer is None or layer == -1:
            return n_layers
        return layer + n_layers if layer < 0 else layer

    # ------------------------------------------------------------- residual stream
    def accumulated_resid(self, layer: Optional[int] = None, incl_mid: bool = False, apply_ln: bool = False,
                          pos_slice: PosSlice = None, mlp_input: bool = False, return_labels: bool = False):
        """The residual stream entering each block up to ``layer`` (None/-1: all, plus the final one).

        ``apply_ln`` at the final layer applies ``ln_final`` to each entry with its own statistics
        (the logit lens); at an earlier layer, that layer's norm with the cached (frozen) scale.
        """
        pos_slice = Slice(pos_slice)
        n_layers = self.model.cfg.n_layers
        layer = self._layer(layer)
        parts, labels = [], []
        for l in range(layer + 1):
            if l == n_layers:
                parts.append(self[("resid_post", n_layers - 1)])
                labels.append("final_post")
                continue
            parts.append(self[("resid_pre", l)])
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer):
                parts.append(self[("resid_mid", l)])
                labels.append(f"{l}_mid")
        stack = torch.stack([pos_slice.apply(p, dim=-2) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                           recompute_ln=layer == n_layers)
        return (stack, labels) if return_labels else stack

    def decompose_resid(self, layer: Optional[int] = None, mlp_input: bool = False, mode: str = "all",
                        apply_ln: bool = False, pos_slice: PosSlice = None, incl_embeds: bool = True,
                        return_labels: bool = False):
        """The outputs that sum to the residual stream entering block ``layer`` (None/-1: the final one)."""
        pos_slice = Slice(pos_slice)
        layer = self._layer(layer)
        incl_attn = mode != "mlp"
        incl_mlp = mode != "attn" and not getattr(self.model.cfg, "attn_only", False)
        parts, labels = [], []
        if incl_embeds:
            if self.has_embed:
                parts.append(self["hook_embed"])
                labels.append("embed")
            if self.has_pos_embed:
                parts.append(self["hook_pos_embed"])
                labels.append("pos_embed")
        for l in range(layer):
            if incl_attn:
                parts.append(self[("attn_out", l)])
                labels.append(f"{l}_attn_out")
            if incl_mlp:
                parts.append(self[("mlp_out", l)])
                labels.append(f"{l}_mlp_out")
        if mlp_input and incl_attn:
            parts.append(self[("attn_out", layer)])
            labels.append(f"{layer}_attn_out")
        stack = torch.stack([pos_slice.apply(p, dim=-2) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def _head_result(self, layer: int) -> torch.Tensor:
        """Cached ``hook_result`` of a layer, else derived from ``hook_z`` and ``W_O``: [batch, pos, head, d_model]."""
        name = get_act_name("result", layer)
        if name in self.cache_dict:
            return self.cache_dict[name]
        z = self[("z", layer)]
        return torch.einsum("...he,hed->...hd", z, self.model.blocks[layer].attn.W_O.to(z.device, z.dtype))

    def compute_head_results(self) -> None:
        """Store every layer's per-head output (``hook_result``) in the cache, derived from ``hook_z``."""
        for l in range(self.model.cfg.n_layers):
            self.cache_dict[get_act_name("result", l)] = self._head_result(l)

    def stack_head_results(self, layer: Optional[int] = -1, return_labels: bool = False, incl_remainder: bool = False,
                           pos_slice: PosSlice = None, apply_ln: bool = False):
        """Each head's output into the residual stream, for layers before ``layer`` (None/-1: all).

        Uses cached ``hook_result`` when present, else derives it from ``hook_z`` and ``W_O``.
        The remainder is the residual minus all head outputs (embeddings, MLPs and attention biases).
        """
        pos_slice = Slice(pos_slice)
        layer = self._layer(layer)
        parts, labels = [], []
        for l in range(layer):
            parts.append(pos_slice.apply(self._head_result(l), dim=-3).movedim(-2, 0))  # [head, ..., d_model]
            labels.extend(f"L{l}H{h}" for h in range(self.model.cfg.n_heads))
        if parts:
            stack = torch.cat(parts)
        else:
            empty = pos_slice.apply(self["hook_embed"], dim=-2)
            stack = empty.new_zeros((0, *empty.shape))
        if incl_remainder:
            total = pos_slice.apply(self[("resid_post", layer - 1)], dim=-2)
            stack = torch.cat([stack, (total - stack.sum(0))[None]])
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def stack_activation(self, activation_name: str, layer: Optional[int] = -1, sublayer_type: Optional[str] = None) -> torch.Tensor:
        """One activation of every layer before ``layer`` (None/-1: all), stacked: [layer, ...]."""
        return torch.stack([self[(activation_name, l, sublayer_type)] for l in range(self._layer(layer))])

    def apply_ln_to_stack(self, residual_stack: torch.Tensor, layer: Optional[int] = None, mlp_input: bool = False,
                          pos_slice: PosSlice = None, batch_slice: Any = None, has_batch_dim: bool = True,
                          recompute_ln: bool = False) -> torch.Tensor:
        """Apply the norm read at ``layer`` (None/-1/n_layers: the final norm) to each component.

        By default with the cached scale of this run (frozen): the map is linear, so the normalised
        components add up to the normalised residual; LayerNorm also centres each component. If
        the norm still has a weight (not folded), it is applied too (TransformerLens leaves it
        out; with folded weights, its default, both agree); its bias belongs to no component.
        ``recompute_ln`` (final norm only) normalises each component with its own statistics
        and applies the final norm as the model does, bias included: the logit lens.
        """
        pos_slice = Slice(pos_slice)
        batch_slice = batch_slice if isinstance(batch_slice, Slice) else Slice(batch_slice)
        n_layers = self.model.cfg.n_layers
        layer = self._layer(layer)
        if has_batch_dim:
            residual_stack = batch_slice.apply(residual_stack, dim=1)
        if self.model.cfg.normalization_type is None:  # no norms (TransformerLens returns the stack as it is)
            return residual_stack
        if layer == n_layers:
            norm, key = self.model.ln_final, "ln_final.hook_scale"
            if recompute_ln:
                return _renormalize(norm, residual_stack)
        else:
            which = "ln2" if mlp_input else "ln1"
            norm, key = getattr(self.model.blocks[layer], which), f"blocks.{layer}.{which}.hook_scale"
            if norm is None:  # no pre-sublayer norm (OLMo 2): the sublayer reads the residual as it is
                return residual_stack
        scale = pos_slice.apply(self[key], dim=-2)
        if self.has_batch_dim:
            scale = batch_slice.apply(scale, dim=0)
        stack = residual_stack
        if norm.centered:
            stack = stack - stack.mean(-1, keepdim=True)
        stack = stack / scale.to(stack.dtype)
        if norm.has_weights:
            stack = stack * norm.w.to(stack.device, stack.dtype)
        return stack

    def logit_attrs(self, residual_stack: torch.Tensor, tokens: Union[str, int, torch.Tensor],
                    incorrect_tokens: Union[None, str, int, torch.Tensor] = None, pos_slice: PosSlice = None,
                    batch_slice: Any = None, has_batch_dim: bool = True) -> torch.Tensor:
        """Each component's direct contribution to the logit of ``tokens`` (minus ``incorrect_tokens``),
        after the final norm with its frozen scale: [component, ...].

        A [batch] tensor of tokens gives one token per example (broadcast over positions)."""
        batch_slice = batch_slice if isinstance(batch_slice, Slice) else Slice(batch_slice)
        direction = self.model.tokens_to_residual_directions(tokens)
        if incorrect_tokens is not None:
            shape = torch.as_tensor(tokens).shape if not isinstance(tokens, str) else ()
            wrong_shape = torch.as_tensor(incorrect_tokens).shape if not isinstance(incorrect_tokens, str) else ()
            if shape != wrong_shape:
                raise ValueError(f"tokens and incorrect_tokens must have the same shape ({tuple(shape)} vs {tuple(wrong_shape)})")
            direction = direction - self.model.tokens_to_residual_directions(incorrect_tokens)
        scaled = self.apply_ln_to_stack(residual_stack, None, pos_slice=pos_slice, batch_slice=batch_slice,
                                        has_batch_dim=has_batch_dim)
        direction = direction.to(scaled.device, scaled.dtype)
        if (has_batch_dim and batch_slice.mode != "int" and scaled.dim() == 4 and direction.dim() == 2
                and direction.shape[0] == scaled.shape[1]):
            direction = direction.unsqueeze(-2)  # one direction per example, broadcast over positions
        return (scaled * direction).sum(-1)


def _renormalize(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """``norm`` applied to each vector with its own statistics, weight and bias (no hooks fire)."""
    dtype = x.dtype
    x = x.float()
    if norm.centered:
        x = x - x.mean(-1, keepdim=True)
    x = (x / (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()).to(dtype)
    if norm.has_weights:
        x = x * norm.w.to(x.device, x.dtype)
    if getattr(norm, "b", None) is not None:
        x = x + norm.b.to(x.device, x.dtype)
    return x
